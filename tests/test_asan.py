"""The native tests again, on an AddressSanitizer build of the extension modules.

The compiled core reads raw pointers (SQLite's BLOB pointers, numpy buffers, the top-k heaps), so
its tests also run with every load and store checked: this test builds ``connection`` and
``fafcas`` with ``-fsanitize=address`` (CMake option AMALFA_SANITIZE) into ``build/asan``, lays
them beside a copy of the Python package, and runs the native test modules in a subprocess with
the ASan runtime preloaded. Any report fails the run (ASan aborts the process on the first one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = [pytest.mark.asan, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
NATIVE_TESTS = ["tests/test_fafcas.py", "tests/test_connection.py", "tests/test_factory.py",
                "tests/test_bulk_matrix.py"]


def _asan_runtime() -> str | None:
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        return None
    out = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = out.stdout.strip()
    return path if out.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


def _cached_sources() -> dict[str, str] | None:
    """The amalgamation and tokenizer files the regular build cached (vendor/*/.cache), as the
    environment variables that make CMake use them instead of downloading: this test never
    reaches the network."""
    sys.path.insert(0, str(ROOT / "vendor"))
    try:
        from fetch import PinError, verify
    finally:
        sys.path.pop(0)
    env: dict[str, str] = {}
    sqlite_pin = json.loads((ROOT / "vendor" / "sqlite" / "pin.json").read_text())
    sqlite_dir = ROOT / "vendor" / "sqlite" / ".cache" / sqlite_pin["version"]
    model_pin = json.loads((ROOT / "vendor" / "model" / "pin.json").read_text())
    model_dir = ROOT / "vendor" / "model" / ".cache" / "all-MiniLM-L6-v2"
    try:
        verify(sqlite_dir, sqlite_pin["sha256"], "SQLite amalgamation")
    except PinError:
        return None
    env["AMALFA_SQLITE_AMALGAMATION"] = str(sqlite_dir)
    if model_dir.is_dir():
        try:
            verify(model_dir, model_pin["sha256"], "MiniLM configs")
            env["AMALFA_MINILM_CONFIGS"] = str(model_dir)
        except PinError:
            pass
    return env


def _build(build_dir: Path, env: dict[str, str]) -> None:
    import cmake  # noqa: F401  - the build requirement that ships the cmake binary

    cmake_bin = shutil.which("cmake") or os.path.join(os.path.dirname(cmake.__file__), "data", "bin",
                                                      "cmake")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(
        [cmake_bin, "-S", str(ROOT), "-B", str(build_dir), *generator,
         "-DAMALFA_SANITIZE=ON", "-DSKBUILD_PROJECT_NAME=amalfa", "-DCMAKE_BUILD_TYPE=Debug",
         f"-DPython_EXECUTABLE={sys.executable}"],
        check=True, capture_output=True, text=True, env={**os.environ, **env})
    subprocess.run([cmake_bin, "--build", str(build_dir), "-j", str(os.cpu_count() or 2)],
                   check=True, capture_output=True, text=True)


def test_native_tests_pass_under_address_sanitizer(tmp_path):
    runtime = _asan_runtime()
    if runtime is None:
        pytest.skip("no AddressSanitizer runtime (gcc's libasan) on this machine")
    pytest.importorskip("cmake")
    sources = _cached_sources()
    if sources is None:
        pytest.skip("the pinned SQLite amalgamation is not cached in vendor/sqlite/.cache: build "
                    "amalfa from this checkout once (pip install .), or run "
                    "python vendor/sqlite/obtain.py, then run this test again")
    build_dir = ROOT / "build" / "asan"
    try:
        _build(build_dir, sources)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"ASan build failed:\n{exc.stdout[-3000:]}\n{exc.stderr[-3000:]}")

    # a copy of the Python package with the sanitized extension modules in place
    stage = tmp_path / "stage"
    shutil.copytree(ROOT / "src" / "amalfa", stage / "amalfa",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for module in ("connection", "fafcas"):
        shutil.copy2(build_dir / f"{module}{suffix}", stage / "amalfa" / "_core")

    env = dict(os.environ)
    env["LD_PRELOAD"] = runtime
    # CPython itself is not instrumented and keeps memory until exit: leak checks would only
    # report the interpreter. Every invalid read or write still aborts with a report.
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=1:halt_on_error=1"
    env["PYTHONPATH"] = str(stage)
    env["AMALFA_ASAN_STAGE"] = str(stage)
    bootstrap = (
        "import sys, pytest\n"
        # drop an editable install's import redirect so that the staged modules load
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__.lower()"
        " and 'ScikitBuild' not in type(f).__name__]\n"
        "import amalfa._core.fafcas as f\n"
        "assert f.__file__.startswith(sys.argv[1]), f.__file__\n"
        "sys.exit(pytest.main(sys.argv[2:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", bootstrap, str(stage), "-q", "-p", "no:cacheprovider",
         "-m", "not slow", *NATIVE_TESTS],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    output = proc.stdout[-6000:] + proc.stderr[-6000:]
    assert "AddressSanitizer" not in proc.stderr, output
    assert proc.returncode == 0, output
    assert " passed" in proc.stdout, output
