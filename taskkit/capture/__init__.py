"""The write side: what workers and clients record as tasks run (history, dead letters).

Loaded by every worker, so it never imports the app or pandas. `connect()` wires every
Celery signal receiver; `taskkit.create_app` calls it.
"""

from .receivers import connect

__all__ = ["connect"]
