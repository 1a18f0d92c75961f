#!/usr/bin/env python3
"""Build a wheelhouse on the controller: the given packages and all their dependencies.

    build_wheelhouse.py --cache DIR [--pip-arg ARG ...] SOURCE [SOURCE ...]

Each SOURCE is what `pip wheel` takes (a project directory, "dir[extra]", a requirement).
The release id is a hash of every wheel's name and RECORD (which lists a sha256 of every
file inside), not of the zip files, so the same sources give the same id however often
they are rebuilt; the hosts then see no change. Prints one JSON object: id, tarball,
requirements (the top-level pins hosts install with --no-index).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path


def wheel_digest(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        return hashlib.sha256(zf.read(record)).hexdigest()


def top_level(wheel_dir: Path, sources: list[str]) -> list[str]:
    """name==version for each source that is a local project (its wheel is in wheel_dir)."""
    pins = []
    for source in sources:
        path, _, extra = source.partition("[")
        if not Path(path).is_dir():
            pins.append(source)
            continue
        # The project's name, as pip's metadata build reports it, is the wheel built last
        # for that path; ask pip's metadata directly instead: cheap for a local dir.
        out = subprocess.run(
            [sys.executable, "-c", "import sys, tomllib; print(tomllib.load(open(sys.argv[1], 'rb'))['project']['name'])", f"{path}/pyproject.toml"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        norm = out.replace("-", "_").lower()
        versions = [w.name.split("-")[1] for w in wheel_dir.glob("*.whl") if w.name.split("-")[0].lower() == norm]
        if len(versions) != 1:
            raise SystemExit(f"expected one wheel of {out} in the wheelhouse, found {versions}")
        pins.append(f"{out}{'[' + extra if extra else ''}=={versions[0]}")
    return pins


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True, type=Path, help="controller directory that keeps built releases")
    ap.add_argument("--pip-arg", action="append", default=[], help="extra argument for pip wheel")
    ap.add_argument("sources", nargs="+")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.cache, prefix=".build-") as tmp:
        wheels = Path(tmp) / "wheels"
        p = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels), *args.pip_arg, *args.sources],
            capture_output=True,
            text=True,
        )
        if p.returncode:
            print(p.stdout + p.stderr, file=sys.stderr)
            return p.returncode
        requirements = top_level(wheels, args.sources)
        digest = hashlib.sha256()
        for wheel in sorted(wheels.glob("*.whl")):
            digest.update(f"{wheel.name} {wheel_digest(wheel)}\n".encode())
        digest.update("\n".join(requirements).encode())
        release = digest.hexdigest()[:16]
        tarball = args.cache / f"{release}.tar"
        if not tarball.exists():  # same id, same content: keep the first tarball, so its checksum stays
            (wheels / "requirements.txt").write_text("\n".join(requirements) + "\n")
            staging = Path(tmp) / "release.tar"
            with tarfile.open(staging, "w") as tar:
                for f in sorted(wheels.iterdir()):
                    info = tar.gettarinfo(str(f), arcname=f.name)
                    info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "root", "root", 0o644
                    with f.open("rb") as fh:
                        tar.addfile(info, fh)
            shutil.move(staging, tarball)
    print(json.dumps({"id": release, "tarball": str(tarball), "requirements": requirements}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
