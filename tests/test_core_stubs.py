"""The .pyi stubs of the compiled core match the modules (mypy.stubtest), so type checkers see
amalfa._core as it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "src" / "amalfa" / "_core"


def test_core_stubs_match_the_compiled_modules():
    pytest.importorskip("mypy")
    done = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "amalfa._core.connection", "amalfa._core.fafcas",
         "--allowlist", str(CORE / "stubtest-allowlist.txt")],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
