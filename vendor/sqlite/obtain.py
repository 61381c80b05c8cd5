"""Obtain the pinned SQLite amalgamation and print the folder that holds it.

The build (CMakeLists.txt) runs this script at configure time. No SQLite source is committed:
the amalgamation comes from the sdist of a registry package (see pin.json), is cut where that
project's own appended lines begin, and is checked against the pinned sha256 before any build
uses it. The verified files are cached in ``vendor/sqlite/.cache/<version>/`` (git-ignored), so
only the first build downloads anything.

``AMALFA_SQLITE_AMALGAMATION`` may name a folder (or a ``sqlite3.c`` file beside its
``sqlite3.h``) already on disk; it is checked against the same hashes.

Exit status is non-zero, with a message naming the file and both hashes, on any mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PIN = json.loads((HERE / "pin.json").read_text())
ENV_VAR = "AMALFA_SQLITE_AMALGAMATION"


class PinError(RuntimeError):
    pass


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify(folder: Path) -> Path:
    for name, expected in PIN["sha256"].items():
        path = folder / name
        if not path.is_file():
            raise PinError(f"{path} is missing (expected the SQLite {PIN['version']} amalgamation)")
        actual = sha256_of(path)
        if actual != expected:
            raise PinError(
                f"sha256 mismatch for {path}:\n  expected {expected}\n  actual   {actual}\n"
                f"This is not the pinned SQLite {PIN['version']} amalgamation; refusing to build."
            )
    return folder


def cut_amalgamation(raw: bytes) -> bytes:
    """Keep sqlite3.c up to and including its own closing line; drop what follows."""
    marker = PIN["source"]["cut_after_line"].encode()
    at = raw.find(marker)
    if at < 0:
        raise PinError(f"the line {marker.decode()!r} is not in the downloaded sqlite3.c")
    end = raw.index(b"\n", at) + 1
    return raw[:end]


def download_into(folder: Path) -> None:
    src = PIN["source"]
    with tempfile.TemporaryDirectory(prefix="amalfa-sqlite-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--quiet", "-d", tmp, f"{src['package']}=={src['version']}",
        ]
        # pip download of an sdist also prepares its metadata (setup.py). Without isolation that
        # is quick where setuptools is importable; with isolation pip installs it first.
        for extra in (["--no-build-isolation"], []):
            proc = subprocess.run(cmd + extra, capture_output=True, text=True)
            archives = sorted(Path(tmp).glob("*.tar.gz"))
            if archives:
                break
        if not archives:
            raise PinError(
                f"could not download the sdist of {src['package']}=={src['version']} "
                f"(pip exit {proc.returncode}):\n{proc.stderr[-2000:]}\n"
                f"Set {ENV_VAR} to a folder holding sqlite3.c and sqlite3.h to build offline."
            )
        with tarfile.open(archives[0]) as tar:
            members = {Path(m.name).relative_to(Path(m.name).parts[0]).as_posix(): m
                       for m in tar.getmembers() if len(Path(m.name).parts) > 1}
            raw_c = tar.extractfile(members[src["member_c"]]).read()
            raw_h = tar.extractfile(members[src["member_h"]]).read()
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "sqlite3.c").write_bytes(cut_amalgamation(raw_c))
    (staging / "sqlite3.h").write_bytes(raw_h)
    verify(staging)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


def obtain() -> Path:
    override = os.environ.get(ENV_VAR)
    if override:
        path = Path(override).expanduser().resolve()
        return verify(path.parent if path.is_file() else path)
    cache = HERE / ".cache" / PIN["version"]
    try:
        return verify(cache)
    except PinError:
        pass
    download_into(cache)
    return cache


def main() -> int:
    try:
        folder = obtain()
    except PinError as exc:
        print(f"amalfa: {exc}", file=sys.stderr)
        return 1
    print(folder.as_posix())
    return 0


if __name__ == "__main__":
    sys.exit(main())
