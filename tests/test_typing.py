"""Type checks of the package: every compiled module of the core has a ``.pyi`` stub, and mypy
over ``src/`` (those stubs included) reports nothing, with the strictness ``pyproject.toml``
states. (``tests/test_core_stubs.py`` checks the stubs against the built modules with
``mypy.stubtest``.)

mypy runs in a subprocess on the repository's own files, with its cache in a temporary folder.
The tests skip, saying why, when mypy is not installed (it is in the ``test`` extra).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "src" / "amalfa" / "_core"

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                                reason="mypy is not installed: pip install -e '.[test]'")


def compiled_core_modules() -> list[str]:
    """``amalfa._core.<name>`` for every Cython module of the core."""
    return sorted(f"amalfa._core.{path.stem}" for path in CORE.glob("*.pyx"))


def run_mypy(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    """``python -m <args>`` in the repository, mypy's cache in ``cache`` (stubtest has no
    --cache-dir option; it reads MYPY_CACHE_DIR)."""
    import os

    env = {**os.environ, "MYPY_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def test_every_compiled_module_has_a_stub() -> None:
    missing = [name for name in compiled_core_modules()
               if not (CORE / f"{name.rsplit('.', 1)[1]}.pyi").is_file()]
    if missing == compiled_core_modules():
        pytest.skip("no .pyi stubs for amalfa._core yet")
    assert not missing, f"compiled modules without a .pyi stub: {missing}"


def test_mypy_reports_no_errors_in_the_package(tmp_path: Path) -> None:
    result = run_mypy(["mypy", "--config-file", "pyproject.toml"], tmp_path / "cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_a_type_checker_resolves_the_connection(tmp_path: Path) -> None:
    # ResonanceDB.raw and DatabaseFactory.connect() are the compiled Connection (from its stub),
    # and `with db.transaction() as db` keeps the database's own type
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from amalfa.db import ResonanceDB\n"
        "from amalfa.factory import DatabaseFactory\n"
        "db = ResonanceDB(':memory:')\n"
        "reveal_type(db.raw)\n"
        "reveal_type(DatabaseFactory.connect('x'))\n"
        "with db.transaction() as inner:\n"
        "    reveal_type(inner)\n", encoding="utf-8")
    result = run_mypy(["mypy", "--config-file", "pyproject.toml", str(probe)],
                      tmp_path / "cache")
    revealed = [line.split('Revealed type is "', 1)[1].rstrip('"')
                for line in result.stdout.splitlines() if "Revealed type is" in line]
    assert revealed == ["amalfa._core.connection.Connection",
                        "amalfa._core.connection.Connection",
                        "amalfa.db.resonance.ResonanceDB"], result.stdout
