#!/usr/bin/env python3
"""Build a wheelhouse on the controller for the hosts: the given packages and all their dependencies.

    build_wheelhouse.py --cache DIR --python-version 3.11.2 --glibc 2.36 --arch x86_64
                        [--pip-arg ARG ...] SOURCE [SOURCE ...]

Each SOURCE is what `pip wheel` takes: a project directory ("dir" or "dir[extra,...]") or a
requirement. pip resolves on the controller's Python, so two things are then checked for
the hosts' Python and platform:

- environment markers: a dependency such as `async-timeout; python_full_version < "3.11.3"`
  is skipped by a 3.11.7 controller but needed by Debian 12's 3.11.2; every wheel's
  requirements are evaluated for the hosts and what is missing is downloaded;
- tags: every wheel must install on the hosts (cp311 / abi3 / none, manylinux up to the
  hosts' glibc), or the build fails naming the wheel.

The release id is a hash of every wheel's name and RECORD (which lists a sha256 of every
file inside), not of the zip files, so the same sources give the same id however often they
are rebuilt and the hosts see no change. Prints one JSON object: id, tarball, requirements
(the top-level pins the hosts install with --no-index).
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

from packaging import tags
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename


def run(argv: list[str]) -> None:
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"`{' '.join(argv)}` failed:\n{p.stdout}{p.stderr}")


def wheel_file(wheel: Path, suffix: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(next(n for n in zf.namelist() if n.endswith(f".dist-info/{suffix}")))


def top_level(wheels: Path, sources: list[str]) -> list[str]:
    """name[extras]==version for each local project; other sources as given."""
    built = {parse_wheel_filename(w.name)[0]: str(parse_wheel_filename(w.name)[1]) for w in wheels.glob("*.whl")}
    pins = []
    for source in sources:
        path, bracket, extras = source.partition("[")
        if not Path(path).is_dir():
            pins.append(source)
            continue
        name = tomllib.loads((Path(path) / "pyproject.toml").read_text())["project"]["name"]
        pins.append(f"{name}{bracket}{extras}=={built[canonicalize_name(name)]}")
    return pins


def add_marker_dependencies(wheels: Path, pins: list[str], env: dict[str, str], pip: list[str]) -> None:
    """Download the dependencies whose markers hold on the hosts but not on the controller."""
    while True:
        have = {parse_wheel_filename(w.name)[0]: w for w in wheels.glob("*.whl")}
        extras: dict[str, set[str]] = {}
        for pin in pins:
            req = Requirement(pin)
            extras.setdefault(canonicalize_name(req.name), set()).update(req.extras)
        missing, changed = [], True
        while changed:  # extras requested by one wheel add requirements of another
            changed = False
            for name, wheel in have.items():
                meta = email.parser.BytesParser().parsebytes(wheel_file(wheel, "METADATA"))
                for line in meta.get_all("Requires-Dist") or []:
                    req = Requirement(line)
                    wanted = extras.get(name, set()) | {""}
                    if req.marker and not any(req.marker.evaluate({**env, "extra": e}) for e in wanted):
                        continue
                    dep = canonicalize_name(req.name)
                    if dep not in have:
                        req.marker = None
                        missing.append(str(req))
                    elif not req.extras <= extras.get(dep, set()):
                        extras.setdefault(dep, set()).update(req.extras)
                        changed = True
        if not missing:
            return
        run([*pip, "download", "--dest", str(wheels), "--find-links", str(wheels), *sorted(set(missing))])


def check_tags(wheels: Path, python: tuple[int, int], glibc: tuple[int, int], arch: str) -> None:
    platforms = [f"manylinux_{glibc[0]}_{minor}_{arch}" for minor in range(glibc[1], -1, -1)]
    platforms += [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}", f"linux_{arch}"]
    supported = set(tags.cpython_tags(python, platforms=platforms)) | set(tags.compatible_tags(python, platforms=platforms))
    bad = [w.name for w in wheels.glob("*.whl") if not parse_wheel_filename(w.name)[3] & supported]
    if bad:
        raise SystemExit(f"these wheels do not install on Python {python[0]}.{python[1]} / glibc {glibc[0]}.{glibc[1]} / {arch}: {bad}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True, type=Path, help="controller directory that keeps built releases")
    ap.add_argument("--python-version", required=True, help="the hosts' Python, e.g. 3.11.2")
    ap.add_argument("--glibc", required=True, help="the hosts' glibc, e.g. 2.36")
    ap.add_argument("--arch", default="x86_64", help="the hosts' machine, e.g. x86_64 or aarch64")
    ap.add_argument("--pip-arg", action="append", default=[], help="extra argument for pip")
    ap.add_argument("sources", nargs="+")
    args = ap.parse_args()
    python = tuple(int(x) for x in args.python_version.split(".")[:2])
    if python != sys.version_info[:2]:
        raise SystemExit(f"the hosts run Python {args.python_version}; build with a controller Python {python[0]}.{python[1]} too")
    env = {
        **default_environment(),
        "python_version": f"{python[0]}.{python[1]}",
        "python_full_version": args.python_version,
        "implementation_version": args.python_version,
        "platform_machine": args.arch,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
    }
    pip = [sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check"]
    args.cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.cache, prefix=".build-") as tmp:
        wheels = Path(tmp) / "wheels"
        run([*pip, "wheel", "--wheel-dir", str(wheels), *args.pip_arg, *args.sources])
        requirements = top_level(wheels, args.sources)
        add_marker_dependencies(wheels, requirements, env, [*pip, *args.pip_arg])
        check_tags(wheels, python, tuple(int(x) for x in args.glibc.split(".")[:2]), args.arch)
        digest = hashlib.sha256()
        for wheel in sorted(wheels.glob("*.whl")):
            digest.update(f"{wheel.name} {hashlib.sha256(wheel_file(wheel, 'RECORD')).hexdigest()}\n".encode())
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
    print(json.dumps({"id": release, "tarball": str(tarball), "requirements": requirements, "python_version": args.python_version}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
