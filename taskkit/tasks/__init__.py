"""Built-in tasks: `ops` (health, cleanup) and `science` (a sample parameter sweep)."""
