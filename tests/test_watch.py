"""`amalfa watch` as a real process on real files with the real model.

Every wait polls with a deadline (a generous one: the machine is shared); nothing sleeps a fixed
time. The watcher reports each batch as one JSON line on stdout (`--json`), which the tests read
through a thread so that a silent watcher never blocks them.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from amalfa.db import ResonanceDB
from amalfa.errors import WatcherRunningError
from amalfa.watch import WatcherLock, lock_path_for

DEADLINE = 90.0  # seconds: a ceiling for a broken watcher, not a speed claim
DB = Path(".amalfa/runtime/resonance.db")

LONG_DOC = ("# Handbook\n\n## Anchors\n\n" + "Anchors hold the boat in the bay overnight. " * 30
            + "\n\n## Knots\n\n" + "The bowline makes a fixed loop at the end of a line. " * 30
            + "\n\n## Tides\n\n" + "Spring tides follow the full and the new moon. " * 30 + "\n")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("AMALFA_MODEL_PATH", "EMBEDDING_MODEL", "AMALFA_DEBUG", "AMALFA_SETTINGS")}
    env.update(HOME=str(home), HF_HUB_OFFLINE="1")
    return env


class WatchProcess:
    """`amalfa watch --json` in a project, its batches readable with a deadline."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "amalfa", "watch", "--json"], cwd=root, env=_env(root),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next_batch(self) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=DEADLINE)
        except queue.Empty:
            pytest.fail("the watcher reported no batch before the deadline")
        if line is None:
            pytest.fail(f"the watcher exited: {self.proc.wait()} {self.proc.stderr.read()}")
        return json.loads(line)

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=DEADLINE)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "docs" / "drafts").mkdir(parents=True)
    (tmp_path / "docs" / "handbook.md").write_text(LONG_DOC)
    (tmp_path / "docs" / "other.md").write_text("# Other\n\nBread rises with yeast.\n")
    (tmp_path / "amalfa.settings.json").write_text(json.dumps({
        "sources": ["docs"], "excludePatterns": ["drafts"], "watch": {"debounce": 300}}))
    return tmp_path


@pytest.fixture
def watcher(project: Path):
    process = WatchProcess(project)
    first = process.next_batch()  # the catch-up run over what is already there
    assert first["changes"] == [] and sorted(first["added"]) == ["docs-handbook", "docs-other"]
    yield process
    process.stop()


def _node_ids(root: Path) -> set[str]:
    with ResonanceDB(root / DB, readonly=True) as db:
        return {node.id for node in db.get_nodes(exclude_content=True)}


def _batch_touching(process: WatchProcess, rel: str) -> dict[str, Any]:
    """The next batch whose changes name ``rel`` (earlier batches must not name it either)."""
    while True:
        batch = process.next_batch()
        if any(change["path"] == rel for change in batch["changes"]):
            return batch


def test_new_file_is_found_by_search(watcher: WatchProcess, project: Path) -> None:
    sentence = "The vermilion albatross collects brass keys from abandoned lighthouses."
    (project / "docs" / "albatross.md").write_text(f"# Albatross\n\n{sentence}\n")
    batch = _batch_touching(watcher, "docs/albatross.md")
    assert batch["added"] == ["docs-albatross"] and batch["error"] is None
    search = subprocess.run(
        [sys.executable, "-m", "amalfa", "search", sentence, "-k", "1", "--json"],
        cwd=project, env=_env(project), capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(search.stdout)[0]["id"] == "docs-albatross"
    runs = [json.loads(line) for line in (project / ".amalfa" / "runs.jsonl").read_text()
            .splitlines() if line.strip()]
    logged = [run for run in runs if run["operation"] == "watch"]
    assert logged[0]["changes"] == 0  # the catch-up run
    assert any(run["added"] == 1 and run["changes"] >= 1 for run in logged[1:])


def test_edit_re_embeds_only_what_changed(watcher: WatchProcess, project: Path) -> None:
    path = project / "docs" / "handbook.md"
    path.write_text(LONG_DOC.replace("Spring tides follow", "Neap tides follow", 1))
    batch = _batch_touching(watcher, "docs/handbook.md")
    assert batch["updated"] == ["docs-handbook"] and batch["added"] == []
    # the node and the one passage whose text changed; the other passages are kept
    assert 1 <= batch["passages_embedded"] < 3


def test_deleted_file_disappears(watcher: WatchProcess, project: Path) -> None:
    (project / "docs" / "other.md").unlink()
    batch = _batch_touching(watcher, "docs/other.md")
    assert batch["removed"] == ["docs-other"]
    assert "docs-other" not in _node_ids(project)


def test_save_by_rename_is_one_update(watcher: WatchProcess, project: Path) -> None:
    target = project / "docs" / "other.md"
    temporary = project / "docs" / ".other.md.tmp"
    temporary.write_text("# Other\n\nBread rises with yeast and time.\n")
    os.replace(temporary, target)  # how editors save atomically
    batch = _batch_touching(watcher, "docs/other.md")
    assert batch["updated"] == ["docs-other"]
    # a marker change: every batch before it is accounted for, so a second update would show
    (project / "docs" / "marker.md").write_text("# Marker\n\nNothing here.\n")
    later = _batch_touching(watcher, "docs/marker.md")
    assert "docs-other" not in later["updated"]
    with ResonanceDB(project / DB, readonly=True) as db:
        updates = [entry for entry in db.get_history("docs-other", entity_type="node")
                   if entry.action == "update"]
    assert len(updates) == 1


def test_excluded_and_non_markdown_paths_are_ignored(watcher: WatchProcess,
                                                     project: Path) -> None:
    (project / "docs" / "drafts" / "secret.md").write_text("# Secret\n\nNot yet.\n")
    (project / "docs" / "notes.txt").write_text("plain text\n")
    (project / "docs" / "marker.md").write_text("# Marker\n\nNothing here.\n")
    batch = _batch_touching(watcher, "docs/marker.md")
    assert [change["path"] for change in batch["changes"]] == ["docs/marker.md"]
    assert "docs-drafts-secret" not in _node_ids(project)


def test_second_watcher_says_one_is_running_and_sigterm_stops_cleanly(
        watcher: WatchProcess, project: Path) -> None:
    second = subprocess.run([sys.executable, "-m", "amalfa", "watch"], cwd=project,
                            env=_env(project), capture_output=True, text=True, timeout=300,
                            check=False)
    assert second.returncode == 1
    assert "already running" in second.stderr and f"pid {watcher.proc.pid}" in second.stderr
    code, stderr = watcher.stop()
    assert code == 0, stderr
    assert "stopped after" in stderr and "Traceback" not in stderr
    # the lock went with the process: a new watcher may start
    with WatcherLock(project / DB):
        pass


def test_lock_is_exclusive_within_one_process(tmp_path: Path) -> None:
    db_path = tmp_path / "x.db"
    with WatcherLock(db_path):
        with pytest.raises(WatcherRunningError, match=f"pid {os.getpid()}") as caught:
            WatcherLock(db_path).acquire()
        assert caught.value.pid == os.getpid()
    assert lock_path_for(db_path).read_text() == ""  # released
    with WatcherLock(db_path):
        pass


def test_bad_options_are_usage_errors(project: Path) -> None:
    for args, words in ((["--events", "created"], "unknown kind"),
                        (["--debounce", "-5"], "--debounce: must be at least 0 (range 0..")):
        proc = subprocess.run([sys.executable, "-m", "amalfa", "watch", *args], cwd=project,
                              env=_env(project), capture_output=True, text=True,
                              timeout=DEADLINE, check=False)
        assert proc.returncode == 2 and words in proc.stderr


def test_sigint_stops_cleanly(project: Path) -> None:
    process = WatchProcess(project)
    process.next_batch()
    process.proc.send_signal(signal.SIGINT)
    code, stderr = process.stop()
    assert code == 0 and "stopped after 1 run(s)" in stderr and "Traceback" not in stderr
    assert _node_ids(project) == {"docs-handbook", "docs-other"}  # nothing lost


def test_watcher_answers_the_events_the_settings_name(tmp_path: Path) -> None:
    """``watch.events`` from the settings is the default; an explicit ``events`` wins."""
    from amalfa.settings import load_settings
    from amalfa.watch import Watcher

    (tmp_path / "docs").mkdir()
    (tmp_path / "amalfa.settings.json").write_text(
        json.dumps({"sources": ["docs"], "watch": {"events": ["modified"]}}))
    settings = load_settings(root=tmp_path)
    assert Watcher(settings).events == {"modified"}
    assert Watcher(settings, events=["added", "deleted"]).events == {"added", "deleted"}

