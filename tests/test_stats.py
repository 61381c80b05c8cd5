"""StatsTracker, StatsLogger and IngestionStats, on real files (and real processes)."""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

import amalfa
from amalfa.errors import AmalfaError
from amalfa.settings import Settings
from amalfa.stats import (
    HISTORY_LIMIT,
    BaselineError,
    DomainStats,
    IngestionStats,
    Mismatch,
    Snapshot,
    StatsLogger,
    StatsTracker,
    ValidationResult,
)

SRC = Path(amalfa.__file__).resolve().parent.parent


def snap(nodes: int = 100, edges: int = 50, embeddings: int = 100, **extra: object) -> Snapshot:
    return Snapshot(nodes=nodes, edges=edges, embeddings=embeddings, **extra)  # type: ignore[arg-type]


@pytest.fixture
def tracker(tmp_path: Path) -> StatsTracker:
    return StatsTracker(path=tmp_path / "history" / "stats-history.json")


def run_workers(tmp_path: Path, code: str, count: int) -> None:
    """Run ``count`` Python processes that all start ``code`` at once (after a shared go file).

    ``code`` sees ``worker`` (its number) and ``tmp`` (a Path). Fails if any process fails.
    """
    go = tmp_path / "go"
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        worker, tmp = int(sys.argv[1]), Path(sys.argv[2])
        while not (tmp / "go").exists():
            time.sleep(0.001)
        """
    ) + textwrap.dedent(code)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(n), str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(count)
    ]
    go.touch()
    failures = []
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failures.append(err.decode(errors="replace"))
    assert not failures, failures


# =============================================================================================
# StatsTracker
# =============================================================================================


def test_tracker_file_comes_from_the_settings(tmp_path: Path) -> None:
    tracker = StatsTracker(settings=Settings(root=tmp_path))
    assert tracker.path == tmp_path / ".amalfa" / "stats-history.json"
    assert not (tmp_path / ".amalfa").exists()  # nothing created until something is recorded
    tracker.record(snap())
    assert tracker.path.is_file()


def test_tracker_uses_loaded_settings_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AMALFA_SETTINGS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert StatsTracker().path == tmp_path / ".amalfa" / "stats-history.json"
    assert amalfa.StatsTracker is StatsTracker


def test_empty_history(tracker: StatsTracker) -> None:
    assert tracker.all() == []
    assert tracker.latest() is None
    assert tracker.summary() == "No historical data available"
    assert not tracker.path.exists()


def test_record_fills_in_the_timestamp(tracker: StatsTracker) -> None:
    before = datetime.now().astimezone()
    stored = tracker.record(snap(db_size_mb=1.5, version="1.2.0", gates={"passed": 3}))
    after = datetime.now().astimezone()

    assert stored.timestamp.endswith("Z")
    when = datetime.fromisoformat(stored.timestamp.replace("Z", "+00:00"))
    assert before.replace(microsecond=0) <= when.replace(microsecond=0) <= after
    assert tracker.latest() == stored
    assert stored.gates == {"passed": 3}
    assert stored.version == "1.2.0"


def test_record_keeps_a_given_timestamp(tracker: StatsTracker) -> None:
    stored = tracker.record(snap(timestamp="2024-01-02T03:04:05.000Z"))
    assert stored.timestamp == "2024-01-02T03:04:05.000Z"
    assert tracker.all()[0].timestamp == "2024-01-02T03:04:05.000Z"


def test_history_file_format_matches_the_original(tracker: StatsTracker) -> None:
    tracker.record(snap(10, 20, 9, db_size_mb=0.25, timestamp="2024-01-01T00:00:00.000Z"))
    data = json.loads(tracker.path.read_text())
    assert set(data) == {"snapshots", "created", "lastUpdated"}
    assert data["lastUpdated"] == "2024-01-01T00:00:00.000Z"
    assert data["snapshots"] == [
        {
            "timestamp": "2024-01-01T00:00:00.000Z",
            "nodes": 10,
            "edges": 20,
            "embeddings": 9,
            "dbSizeMB": 0.25,
        }
    ]


def test_original_history_file_is_read(tracker: StatsTracker) -> None:
    tracker.path.parent.mkdir(parents=True)
    tracker.path.write_text(
        json.dumps(
            {
                "snapshots": [
                    {"timestamp": "t1", "nodes": 5, "edges": 6, "embeddings": 5, "dbSizeMB": 1},
                    {
                        "timestamp": "t2",
                        "nodes": 7,
                        "edges": 8,
                        "embeddings": 7,
                        "dbSizeMB": 2,
                        "version": "0.9",
                    },
                ],
                "created": "t1",
                "lastUpdated": "t2",
            }
        )
    )
    assert [s.nodes for s in tracker.all()] == [5, 7]
    assert tracker.latest() == Snapshot(7, 8, 7, 2.0, "t2", None, "0.9")


def test_record_accepts_mappings_and_objects(tracker: StatsTracker) -> None:
    @dataclass
    class Counts:
        nodes: int
        edges: int
        embeddings: int
        db_size_mb: float

    tracker.record({"nodes": 1, "edges": 2, "embeddings": 1, "dbSizeMB": 0.5})
    tracker.record({"nodes": 3, "edges": 4, "embeddings": 3, "db_size_mb": 0.75})
    tracker.record(Counts(5, 6, 5, 1.0))
    assert [(s.nodes, s.db_size_mb) for s in tracker.all()] == [(1, 0.5), (3, 0.75), (5, 1.0)]


@pytest.mark.parametrize(
    ("current", "message"),
    [
        ({"nodes": 1, "edges": 1}, "needs embeddings"),
        ({"nodes": -1, "edges": 1, "embeddings": 1}, "nodes must be an integer >= 0"),
        ({"nodes": 1, "edges": "many", "embeddings": 1}, "edges must be an integer >= 0"),
        ({"nodes": 1, "edges": 1, "embeddings": True}, "embeddings must be an integer >= 0"),
        ({"nodes": 1, "edges": 1, "embeddings": 1, "db_size_mb": -2}, "db_size_mb must be"),
        ({"nodes": 1, "edges": 1, "embeddings": 1, "gates": {"a": -1}}, "gates['a']"),
    ],
)
def test_bad_snapshots_are_refused_and_not_recorded(
    tracker: StatsTracker, current: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        tracker.record(current)
    with pytest.raises(ValueError, match=re.escape(message)):
        tracker.validate(current)
    assert not tracker.path.exists()


def test_only_the_newest_100_are_kept(tracker: StatsTracker) -> None:
    assert HISTORY_LIMIT == 100
    for n in range(HISTORY_LIMIT + 5):
        tracker.record(snap(nodes=n + 1))
    kept = tracker.all()
    assert len(kept) == 100
    assert [s.nodes for s in kept] == list(range(6, 106))
    assert tracker.latest().nodes == 105  # type: ignore[union-attr]


def test_record_leaves_no_temporary_files(tracker: StatsTracker) -> None:
    for n in range(3):
        tracker.record(snap(nodes=n + 1))
    names = sorted(p.name for p in tracker.path.parent.iterdir())
    assert names == ["stats-history.json", "stats-history.json.lock"]


def test_summary_reports_growth(tracker: StatsTracker) -> None:
    tracker.record(snap(100, 50, 100, db_size_mb=1.0, timestamp="2024-01-01T00:00:00.000Z"))
    tracker.record(snap(120, 40, 110, db_size_mb=1.234, timestamp="2024-02-01T00:00:00.000Z"))
    summary = tracker.summary()
    assert "First snapshot:  2024-01-01T00:00:00.000Z" in summary
    assert "Latest snapshot: 2024-02-01T00:00:00.000Z" in summary
    assert "Total snapshots: 2" in summary
    assert "Nodes: 120 (+20 from first)" in summary
    assert "Edges: 40 (-10 from first)" in summary
    assert "Embeddings: 110" in summary
    assert "Database size: 1.23 MB" in summary


# -- validation rules -------------------------------------------------------------------------


def test_healthy_state_without_history_is_valid_and_quiet(tracker: StatsTracker) -> None:
    result = tracker.validate(snap(100, 50, 100))
    assert result == ValidationResult(valid=True, warnings=[], errors=[])
    assert result  # truthy when valid


def test_validate_does_not_record(tracker: StatsTracker) -> None:
    tracker.record(snap())
    tracker.validate(snap(200, 100, 200))
    assert len(tracker.all()) == 1


def test_zero_nodes_is_an_error(tracker: StatsTracker) -> None:
    result = tracker.validate(snap(0, 0, 5))
    assert not result.valid
    assert not result
    assert result.errors == ["Database has 0 nodes - database is empty"]


def test_zero_embeddings_is_an_error(tracker: StatsTracker) -> None:
    result = tracker.validate(snap(100, 50, 0))
    assert not result.valid
    assert result.errors == ["Database has 0 embeddings - vector search will not work"]


def test_empty_graph_reports_both_errors_without_dividing_by_zero(tracker: StatsTracker) -> None:
    tracker.record(snap(0, 0, 0))  # even against an empty latest snapshot
    result = tracker.validate(snap(0, 0, 0))
    assert not result.valid
    assert len(result.errors) == 2
    assert not any("embeddings -" in w or "%" in w for w in result.warnings)


def test_node_drop_below_80_percent_warns(tracker: StatsTracker) -> None:
    tracker.record(snap(100, 50, 100))
    result = tracker.validate(snap(79, 60, 79))
    assert result.valid  # a warning, not an error
    assert "Node count decreased significantly: 100 -> 79 (-21%)" in result.warnings


def test_node_count_at_exactly_80_percent_does_not_warn(tracker: StatsTracker) -> None:
    tracker.record(snap(100, 50, 100))
    result = tracker.validate(snap(80, 60, 80))
    assert not any("Node count" in w for w in result.warnings)


def test_edge_drop_below_80_percent_warns(tracker: StatsTracker) -> None:
    tracker.record(snap(100, 50, 100))
    result = tracker.validate(snap(110, 39, 110))
    assert "Edge count decreased significantly: 50 -> 39 (-22%)" in result.warnings
    assert not any("Node count" in w for w in result.warnings)


def test_edge_drop_from_zero_edges_cannot_happen(tracker: StatsTracker) -> None:
    tracker.record(snap(100, 0, 100))
    result = tracker.validate(snap(110, 0, 110))
    assert not any("Edge count" in w for w in result.warnings)


def test_no_growth_warns(tracker: StatsTracker) -> None:
    tracker.record(snap(100, 50, 100))
    result = tracker.validate(snap(100, 50, 100))
    assert result.valid
    assert result.warnings == [
        "No growth in nodes or edges since last snapshot - is documentation being updated?"
    ]


def test_growth_in_edges_alone_is_growth(tracker: StatsTracker) -> None:
    tracker.record(snap(100, 50, 100))
    assert tracker.validate(snap(100, 51, 100)).warnings == []


def test_low_edge_density_warns(tracker: StatsTracker) -> None:
    result = tracker.validate(snap(100, 9, 100))
    assert result.warnings == [
        "Low edge density: 0.09 edges per node - documents may be poorly linked"
    ]
    assert tracker.validate(snap(100, 10, 100)).warnings == []  # 0.1 exactly is fine


def test_low_embedding_coverage_warns(tracker: StatsTracker) -> None:
    result = tracker.validate(snap(100, 50, 89))
    assert result.valid
    assert result.warnings == [
        "Only 89% of nodes have embeddings - some nodes may not be searchable"
    ]
    assert tracker.validate(snap(100, 50, 90)).warnings == []  # 90% exactly is fine


def test_validate_takes_mappings_and_small_dataclasses(tracker: StatsTracker) -> None:
    @dataclass
    class Current:
        nodes: int
        edges: int
        embeddings: int
        db_size_mb: float

    assert tracker.validate({"nodes": 0, "edges": 0, "embeddings": 1}).errors == [
        "Database has 0 nodes - database is empty"
    ]
    assert tracker.validate(Current(100, 50, 100, 2.0)).valid


# -- corruption and concurrency ---------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b'{"snapshots": [ {"nodes": 1,',  # a torn write
        b"",  # an empty file
        b'["not", "a", "history"]',
        b'{"snapshots": {"nodes": 1}}',
        b'{"snapshots": [{"nodes": "x", "edges": 1, "embeddings": 1}]}',
        b'{"snapshots": [], "created": "\xff"}',  # not UTF-8
    ],
)
def test_corrupt_history_is_moved_aside_with_a_warning(
    tracker: StatsTracker, content: bytes
) -> None:
    tracker.path.parent.mkdir(parents=True)
    tracker.path.write_bytes(content)

    with pytest.warns(UserWarning, match="is corrupt.*moved it to.*fresh history"):
        assert tracker.all() == []

    aside = list(tracker.path.parent.glob("stats-history.json.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == content  # kept byte for byte, never thrown away
    assert not tracker.path.exists()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fresh history no longer warns
        tracker.record(snap())
        assert len(tracker.all()) == 1


def test_record_over_a_corrupt_history_moves_it_aside_first(tracker: StatsTracker) -> None:
    tracker.path.parent.mkdir(parents=True)
    tracker.path.write_text("garbage")
    with pytest.warns(UserWarning, match="is corrupt"):
        tracker.record(snap(7, 7, 7))
    assert [s.nodes for s in tracker.all()] == [7]
    assert len(list(tracker.path.parent.glob("*.corrupt-*"))) == 1


def test_each_corruption_gets_its_own_aside_file(tracker: StatsTracker) -> None:
    tracker.path.parent.mkdir(parents=True)
    for garbage in ("first", "second"):
        tracker.path.write_text(garbage)
        with pytest.warns(UserWarning):
            tracker.latest()
    kept = sorted(p.read_text() for p in tracker.path.parent.glob("*.corrupt-*"))
    assert kept == ["first", "second"]


@pytest.mark.reliability
def test_concurrent_recorders_lose_no_snapshot(tmp_path: Path) -> None:
    workers, per_worker = 4, 25  # 100 in all: exactly the history limit
    history = tmp_path / "stats-history.json"
    run_workers(
        tmp_path,
        f"""
        from amalfa.stats import StatsTracker
        tracker = StatsTracker(path=tmp / "stats-history.json")
        for i in range({per_worker}):
            tracker.record({{"nodes": 1 + i, "edges": 1, "embeddings": 1,
                             "version": f"w{{worker}}-{{i}}"}})
        """,
        workers,
    )
    snapshots = StatsTracker(path=history).all()
    assert len(snapshots) == workers * per_worker
    assert {s.version for s in snapshots} == {
        f"w{w}-{i}" for w in range(workers) for i in range(per_worker)
    }
    # each worker's own snapshots are in the order it recorded them
    for w in range(workers):
        mine = [s.version for s in snapshots if s.version.startswith(f"w{w}-")]  # type: ignore[union-attr]
        assert mine == [f"w{w}-{i}" for i in range(per_worker)]
    assert not list(tmp_path.glob("*.corrupt-*"))
    assert not list(tmp_path.glob("*.tmp"))


# =============================================================================================
# StatsLogger
# =============================================================================================


@pytest.fixture
def run_log(tmp_path: Path) -> StatsLogger:
    return StatsLogger(path=tmp_path / "logs" / "runs.jsonl")


def test_logger_file_comes_from_the_settings(tmp_path: Path) -> None:
    logger = StatsLogger(settings=Settings(root=tmp_path))
    assert logger.path == tmp_path / ".amalfa" / "runs.jsonl"
    assert not logger.path.parent.exists()
    assert amalfa.StatsLogger is StatsLogger


def test_no_log_means_no_runs(run_log: StatsLogger) -> None:
    assert list(run_log.runs()) == []


def test_log_run_appends_one_whole_line(run_log: StatsLogger) -> None:
    record = run_log.log_run("squash", nodes=3, note="ok")
    assert record["operation"] == "squash"
    assert record["nodes"] == 3
    assert datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))

    run_log.log_run("squash", nodes=4)
    raw = run_log.path.read_bytes()
    assert raw.count(b"\n") == 2
    assert raw.endswith(b"\n")
    assert list(run_log.runs()) == [record, json.loads(raw.splitlines()[1])]


def test_log_run_keeps_a_given_timestamp(run_log: StatsLogger) -> None:
    run_log.log_run("init", timestamp="2024-05-05T00:00:00.000Z")
    assert next(run_log.runs())["timestamp"] == "2024-05-05T00:00:00.000Z"


def test_log_harvest_estimates_the_cost_per_cache_miss(run_log: StatsLogger) -> None:
    record = run_log.log_harvest(files=12, hits=5, misses=7, skipped=1, errors=2, duration_ms=350)
    assert record == {
        "timestamp": record["timestamp"],
        "operation": "harvest",
        "files_processed": 12,
        "cache_hits": 5,
        "cache_misses": 7,
        "skipped": 1,
        "errors": 2,
        "duration_ms": 350,
        "cost_usd": 0.007,
    }
    assert list(run_log.runs()) == [record]
    assert run_log.log_harvest(files=1, hits=1, misses=0, duration_ms=1)["cost_usd"] == 0


def test_log_init(run_log: StatsLogger) -> None:
    record = run_log.log_init(files=3, nodes=30, edges=12, duration_ms=99.5)
    assert {k: v for k, v in record.items() if k != "timestamp"} == {
        "operation": "init",
        "files_processed": 3,
        "nodes": 30,
        "edges": 12,
        "duration_ms": 99.5,
        "errors": 0,
    }


@pytest.mark.parametrize(
    ("operation", "fields", "error"),
    [
        ("", {}, ValueError),
        ("run", {"value": math.nan}, ValueError),
        ("run", {"value": object()}, TypeError),
        ("run", {"operation": "other"}, TypeError),
    ],
)
def test_unwritable_records_write_nothing(
    run_log: StatsLogger, operation: str, fields: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        run_log.log_run(operation, **fields)
    assert not run_log.path.exists()


def test_torn_last_line_is_skipped_silently(run_log: StatsLogger) -> None:
    run_log.log_run("init", n=1)
    with open(run_log.path, "ab") as handle:
        handle.write(b'{"timestamp": "2024", "operation": "ha')  # a writer died here
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runs = list(run_log.runs())
    assert [r["n"] for r in runs] == [1]


def test_next_record_after_a_torn_line_starts_on_a_fresh_line(run_log: StatsLogger) -> None:
    run_log.log_run("init", n=1)
    with open(run_log.path, "ab") as handle:
        handle.write(b'{"timestamp": "2024", "operation": "ha')
    run_log.log_run("init", n=2)

    with pytest.warns(UserWarning, match="line 2 is not a JSON object"):
        runs = list(run_log.runs())
    assert [r["n"] for r in runs] == [1, 2]


def test_blank_lines_are_ignored(run_log: StatsLogger) -> None:
    run_log.path.parent.mkdir(parents=True)
    run_log.path.write_text('\n{"operation": "a"}\n\n{"operation": "b"}\n')
    assert [r["operation"] for r in run_log.runs()] == ["a", "b"]


@pytest.mark.reliability
def test_concurrent_loggers_write_whole_lines(tmp_path: Path) -> None:
    workers, per_worker = 4, 50
    run_workers(
        tmp_path,
        f"""
        from amalfa.stats import StatsLogger
        log = StatsLogger(path=tmp / "runs.jsonl")
        for i in range({per_worker}):
            log.log_run("harvest", worker=worker, i=i, padding="x" * (100 * (i % 7)))
        """,
        workers,
    )
    log = StatsLogger(path=tmp_path / "runs.jsonl")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not one broken line
        runs = list(log.runs())
    assert len(runs) == workers * per_worker
    assert {(r["worker"], r["i"]) for r in runs} == {
        (w, i) for w in range(workers) for i in range(per_worker)
    }


# =============================================================================================
# IngestionStats
# =============================================================================================


def write_baseline(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


BASELINE = {
    "version": "2.1",
    "description": "test corpus",
    "domains": {
        "persona": {"nodes": 100, "edges": {"total": 50, "DEFINES": 30}, "vectors": 100},
        "experience": {"nodes": 40, "edges": 20, "vectors": 40, "semantic_tokens": 10},
    },
    "tolerances": {"nodes": 0.05, "edges": 0.1, "vectors": 0.05},
}


def filled_stats(tmp_path: Path, **counts: int) -> IngestionStats:
    """persona/experience counters matching BASELINE unless overridden."""
    stats = IngestionStats(baseline_path=tmp_path / "baseline.json")
    c = {
        "p_nodes": 100,
        "p_defines": 30,
        "p_other": 20,
        "p_vectors": 100,
        "e_nodes": 40,
        "e_edges": 20,
        "e_vectors": 40,
        "e_tokens": 10,
    } | counts
    stats.record_node("persona", c["p_nodes"])
    stats.record_edge("persona", "DEFINES", c["p_defines"])
    stats.record_edge("persona", "CITES", c["p_other"])
    stats.record_vector("persona", c["p_vectors"])
    stats.record_node("experience", c["e_nodes"])
    stats.record_edge("experience", "LINKS", c["e_edges"])
    stats.record_vector("experience", c["e_vectors"])
    stats.record_semantic_tokens("experience", c["e_tokens"])
    return stats


def test_counters_for_any_domain() -> None:
    stats = IngestionStats(["alpha"])
    assert stats.metrics() == {"alpha": DomainStats()}
    stats.record_node("beta")
    stats.record_node("beta")
    stats.record_edge("beta", "LINKS")
    stats.record_edge("beta", "LINKS", 2)
    stats.record_edge("beta", "CITES")
    stats.record_vector("beta", 3)
    stats.record_semantic_tokens("beta")
    beta = stats.metrics()["beta"]
    assert (beta.nodes, beta.vectors, beta.semantic_tokens) == (2, 3, 1)
    assert beta.edges == {"LINKS": 3, "CITES": 1}
    assert beta.edges_total == 4
    assert beta.metric("edges.total") == 4
    assert beta.metric("edges.LINKS") == 3
    assert beta.metric("edges.NONE") == 0
    assert stats.metrics()["alpha"].edges_total == 0
    assert amalfa.IngestionStats is IngestionStats


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.record_node(""),
        lambda s: s.record_node(None),
        lambda s: s.record_edge("d", "total"),
        lambda s: s.record_edge("d", ""),
        lambda s: s.record_vector("d", -1),
        lambda s: s.record_semantic_tokens("d", 1.5),
    ],
)
def test_bad_counts_are_refused(call: object) -> None:
    stats = IngestionStats()
    with pytest.raises(ValueError):
        call(stats)  # type: ignore[operator]
    assert all(d.nodes == d.vectors == d.edges_total == 0 for d in stats.metrics().values())


def test_missing_baseline_warns_and_skips_verification(tmp_path: Path) -> None:
    stats = filled_stats(tmp_path, p_nodes=1)
    with pytest.warns(UserWarning, match="no baseline found at .*baseline.json"):
        assert stats.load_baseline() is False
    assert not stats.has_baseline
    with pytest.warns(UserWarning, match="no baseline loaded"):
        assert stats.verify_against_baseline() == []


def test_baseline_path_defaults_to_the_settings(tmp_path: Path) -> None:
    stats = IngestionStats(settings=Settings(root=tmp_path))
    with pytest.warns(UserWarning, match=r"\.amalfa/ingestion-baseline\.json"):
        stats.load_baseline()
    (tmp_path / ".amalfa").mkdir()
    write_baseline(tmp_path / ".amalfa" / "ingestion-baseline.json", BASELINE)
    assert stats.load_baseline() is True


def test_matching_counts_pass(tmp_path: Path) -> None:
    stats = filled_stats(tmp_path)
    assert stats.load_baseline(write_baseline(tmp_path / "b.json", BASELINE)) is True
    assert stats.has_baseline
    assert stats.verify_against_baseline() == []


def test_variance_within_tolerance_passes_and_beyond_fails(tmp_path: Path) -> None:
    write_baseline(tmp_path / "baseline.json", BASELINE)
    within = filled_stats(tmp_path, p_nodes=105, p_vectors=95)  # exactly 5%: still within
    within.load_baseline()
    assert within.verify_against_baseline() == []

    beyond = filled_stats(tmp_path, p_nodes=106, e_vectors=30)
    beyond.load_baseline()
    assert beyond.verify_against_baseline() == [
        Mismatch("persona", "nodes", 100, 106, 6, pytest.approx(0.06), 0.05),
        Mismatch("experience", "vectors", 40, 30, -10, 0.25, 0.05),
    ]


def test_edge_totals_and_named_edge_types_are_checked(tmp_path: Path) -> None:
    write_baseline(tmp_path / "baseline.json", BASELINE)
    stats = filled_stats(tmp_path, p_defines=20, p_other=30)  # total still 50
    stats.load_baseline()
    [mismatch] = stats.verify_against_baseline()
    assert (mismatch.domain, mismatch.metric) == ("persona", "edges.DEFINES")
    assert mismatch.variance == pytest.approx(1 / 3)
    assert mismatch.tolerance == 0.1


def test_metric_without_a_tolerance_must_match_exactly(tmp_path: Path) -> None:
    write_baseline(tmp_path / "baseline.json", BASELINE)  # no semantic_tokens tolerance
    stats = filled_stats(tmp_path, e_tokens=11)
    stats.load_baseline()
    [mismatch] = stats.verify_against_baseline()
    assert (mismatch.metric, mismatch.tolerance) == ("semantic_tokens", 0.0)


def test_domain_in_baseline_but_never_recorded_fails(tmp_path: Path) -> None:
    baseline = json.loads(json.dumps(BASELINE))
    baseline["domains"]["archive"] = {"nodes": 10}
    write_baseline(tmp_path / "baseline.json", baseline)
    stats = filled_stats(tmp_path)
    stats.load_baseline()
    assert stats.verify_against_baseline() == [Mismatch("archive", "nodes", 10, 0, -10, 1.0, 0.05)]


def test_expected_zero_flags_anything_that_appears(tmp_path: Path) -> None:
    write_baseline(
        tmp_path / "baseline.json",
        {"domains": {"d": {"nodes": 0, "vectors": 0}}, "tolerances": {"nodes": 0.5}},
    )
    stats = IngestionStats(baseline_path=tmp_path / "baseline.json")
    stats.record_node("d", 3)
    stats.load_baseline()
    [mismatch] = stats.verify_against_baseline()
    assert mismatch.metric == "nodes"
    assert math.isinf(mismatch.variance)


def test_original_baseline_layout_is_read(tmp_path: Path) -> None:
    original = {
        "version": "1.0",
        "last_updated": "2025-01-01",
        "description": "original",
        "persona": {
            "nodes": {"concepts": 90, "directives": 10, "total": 100},
            "edges": {"total": 50},
            "vectors": 100,
            "notes": "",
        },
        "experience": {
            "nodes": {"debriefs": 10, "playbooks": 10, "documents": 20, "total": 40},
            "edges": {"total": 20},
            "vectors": 40,
            "semantic_tokens": 10,
            "notes": "",
        },
        "tolerance": {"nodes": 0, "edges": 0, "vectors": 0, "description": "exact"},
    }
    stats = filled_stats(tmp_path)
    stats.load_baseline(write_baseline(tmp_path / "original.json", original))
    assert stats.verify_against_baseline() == []
    stats.record_vector("persona")
    assert [m.metric for m in stats.verify_against_baseline()] == ["vectors"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{not json", "invalid JSON at line 1"),
        ([], "expected a JSON object"),
        ({"domains": []}, "domains must be an object"),
        ({"domains": {"d": 5}}, "domains.d must be an object"),
        ({"domains": {"d": {"nodes": -1}}}, "domains.d.nodes must be an integer >= 0, got -1"),
        ({"domains": {"d": {"edges": {"LINKS": 1}}}}, "domains.d.edges must have a 'total'"),
        ({"domains": {"d": {"edges": {"total": 1, "X": "a"}}}}, "domains.d.edges.X must be"),
        ({"domains": {}, "tolerances": {"nodes": "5%"}}, "tolerances.nodes must be a number"),
        ({"domains": {}, "tolerances": {"nodes": -0.1}}, "tolerances.nodes must be a number"),
        ({"nothing": "here"}, "no domains found"),
    ],
)
def test_malformed_baseline_is_an_error_naming_the_key(
    tmp_path: Path, data: object, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    stats = IngestionStats()
    with pytest.raises(BaselineError) as caught:
        stats.load_baseline(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, AmalfaError)
    assert not stats.has_baseline


def test_summary_lists_every_domain(tmp_path: Path) -> None:
    stats = filled_stats(tmp_path)
    out = io.StringIO()
    stats.print_summary(file=out)
    text = out.getvalue()
    assert text == stats.summary() + "\n"
    persona = text[text.index("persona:") : text.index("experience:")]
    assert "Nodes:   100" in persona
    assert "Edges:   50" in persona
    assert "DEFINES: 30" in persona
    assert "Vectors: 100" in persona
    assert "Tokens:  10" in text[text.index("experience:") :]
    assert "(nothing recorded)" in IngestionStats().summary()


def test_verification_table(tmp_path: Path) -> None:
    write_baseline(tmp_path / "baseline.json", BASELINE)
    stats = filled_stats(tmp_path, p_nodes=80)
    stats.load_baseline()
    out = io.StringIO()
    mismatches = stats.print_verification(file=out)
    text = out.getvalue()
    assert [m.metric for m in mismatches] == ["nodes"]
    assert text.startswith("Baseline verification: FAILED")
    row = next(line for line in text.splitlines() if line.startswith("persona"))
    assert row.split() == ["persona", "nodes", "100", "80", "-20", "20.0%"]
    assert IngestionStats.verification_table([]) == "Baseline verification: PASSED"


def test_report_with_baseline(tmp_path: Path) -> None:
    write_baseline(tmp_path / "baseline.json", BASELINE)
    stats = filled_stats(tmp_path, e_nodes=30)
    stats.load_baseline()
    report_path = stats.generate_report(tmp_path / "reports" / "ingest.md")
    report = report_path.read_text(encoding="utf-8")

    assert report.startswith("# Ingestion report: ")
    assert "(version 2.1)" in report
    assert "## persona" in report and "## experience" in report
    assert "| nodes | 100 | 100 | ✅ |" in report
    assert "| edges.DEFINES | 30 | 30 | ✅ |" in report
    assert "| edges.CITES | - | 20 | - |" in report  # counted, not in the baseline
    assert "| nodes | 40 | 30 | ❌ |" in report
    assert "## Baseline violations" in report
    assert "| experience | nodes | 40 | 30 | -10 | 25.0% | 5.0% |" in report


def test_report_without_baseline(tmp_path: Path) -> None:
    stats = filled_stats(tmp_path)
    report = stats.generate_report(tmp_path / "r.md").read_text(encoding="utf-8")
    assert "No baseline loaded; counts are not verified." in report
    assert "| nodes | - | 100 | - |" in report
    assert "violations" not in report


def test_report_when_everything_passes(tmp_path: Path) -> None:
    write_baseline(tmp_path / "baseline.json", BASELINE)
    stats = filled_stats(tmp_path)
    stats.load_baseline()
    report = stats.generate_report(tmp_path / "r.md").read_text(encoding="utf-8")
    assert "All baseline metrics are within tolerance." in report
    assert "❌" not in report


# -- after an ingest run ---------------------------------------------------------------------------


@pytest.mark.slow
def test_record_ingest_run_keeps_history_log_and_baseline(tmp_path: Path) -> None:
    from amalfa.db import ResonanceDB
    from amalfa.embedder import Embedder
    from amalfa.ingest import ingest
    from amalfa.settings import load_settings
    from amalfa.stats import record_ingest_run

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# A\n\nSourdough needs a lively starter. See [b](b.md).\n")
    (notes / "b.md").write_text("# B\n\nA hot oven makes a good crust.\n")
    settings = load_settings(root=tmp_path)
    embedder = Embedder(use_daemon=False)

    def run_once() -> object:
        with ResonanceDB.create(settings.database_path) as db:
            result = ingest(["notes"], db=db, embedder=embedder, root=tmp_path)
            counts = db.get_stats()
        return record_ingest_run(settings, result, counts, version="9.9")

    first = run_once()
    assert first.snapshot.nodes == 2 and first.snapshot.version == "9.9"
    assert first.mismatches is None  # no baseline file: verification is opt-in
    history = StatsTracker(settings=settings).all()
    assert [s.nodes for s in history] == [2]
    runs = list(StatsLogger(settings=settings).runs())
    assert runs[-1]["operation"] == "init" and runs[-1]["files_processed"] == 2
    assert (runs[-1]["nodes"], runs[-1]["errors"]) == (2, 0)

    baseline = settings.folders.base / "ingestion-baseline.json"
    baseline.write_text(json.dumps({"domains": {"knowledge": {"nodes": 5}},
                                    "tolerances": {"nodes": 0.1}}))
    second = run_once()
    assert [m.metric for m in second.mismatches] == ["nodes"]
    assert second.validation.valid  # same counts again: a "no growth" warning, not an error
    assert [s.nodes for s in StatsTracker(settings=settings).all()] == [2, 2]
