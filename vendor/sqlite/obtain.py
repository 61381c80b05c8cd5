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

import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from fetch import PinError, pip_download, verify  # noqa: E402

PIN = json.loads((HERE / "pin.json").read_text())
ENV_VAR = "AMALFA_SQLITE_AMALGAMATION"
WHAT = f"SQLite {PIN['version']} amalgamation"


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
        archive = pip_download(
            f"{src['package']}=={src['version']}", Path(tmp), sdist=True,
            hint=f"Set {ENV_VAR} to a folder holding sqlite3.c and sqlite3.h to build offline.")
        with tarfile.open(archive) as tar:
            members = {Path(m.name).relative_to(Path(m.name).parts[0]).as_posix(): m
                       for m in tar.getmembers() if len(Path(m.name).parts) > 1}
            raw_c = tar.extractfile(members[src["member_c"]]).read()
            raw_h = tar.extractfile(members[src["member_h"]]).read()
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "sqlite3.c").write_bytes(cut_amalgamation(raw_c))
    (staging / "sqlite3.h").write_bytes(raw_h)
    verify(staging, PIN["sha256"], WHAT)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


def obtain() -> Path:
    override = os.environ.get(ENV_VAR)
    if override:
        path = Path(override).expanduser().resolve()
        return verify(path.parent if path.is_file() else path, PIN["sha256"], WHAT)
    cache = HERE / ".cache" / PIN["version"]
    try:
        return verify(cache, PIN["sha256"], WHAT)
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
