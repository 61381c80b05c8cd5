"""``amalfa init --precision``: the real command in a subprocess records the precision beside the
model, refuses to add vectors of another precision, and changes it only with ``--force``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from amalfa.db import ResonanceDB
from amalfa.embedder import DEFAULT_MODEL

NOTES = {
    "notes/sourdough.md": "# Sourdough\n\nA starter of wild yeast leavens the loaf overnight.\n",
    "notes/mortgage.md": "# Mortgage\n\nOverpaying the principal shortens the term.\n",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "project"
    for rel, text in NOTES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    settings = root / "amalfa.settings.json"
    settings.write_text(json.dumps({"sources": ["notes"]}), encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if k not in ("AMALFA_MODEL_PATH", "EMBEDDING_MODEL", "COLUMNS")}
    env.update(HOME=str(tmp_path / "home"), AMALFA_SETTINGS=str(settings),
               VECTOR_PORT=str(_free_port()), HF_HUB_OFFLINE="1")
    return root, env


def amalfa(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "amalfa", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def recorded(root: Path) -> tuple[str | None, str | None]:
    with ResonanceDB(root / ".amalfa" / "runtime" / "resonance.db", readonly=True) as db:
        return db.recorded_model(), db.recorded_precision()


def test_init_records_the_precision_and_refuses_another(project) -> None:
    root, env = project
    first = amalfa(root, env, "init", "--precision", "int8")
    assert first.returncode == 0, first.stderr
    assert recorded(root) == (DEFAULT_MODEL, "int8")

    (root / "notes" / "sourdough.md").write_text("# Sourdough\n\nRye flour feeds it.\n",
                                                  encoding="utf-8")
    mixed = amalfa(root, env, "init")  # the settings' precision: fp32
    assert mixed.returncode != 0
    assert "(int8)" in mixed.stderr and "--precision int8" in mixed.stderr
    assert recorded(root) == (DEFAULT_MODEL, "int8")  # nothing was written

    same = amalfa(root, env, "init", "--precision", "int8")
    assert same.returncode == 0, same.stderr

    forced = amalfa(root, env, "init", "--force", "--precision", "fp32")
    assert forced.returncode == 0, forced.stderr
    assert recorded(root) == (DEFAULT_MODEL, "fp32")
