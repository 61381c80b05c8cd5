"""Ingestion baselines: what one ingestion produced per domain, checked against a baseline
file within its tolerances.

:class:`IngestionStats` counts nodes, edges (by type), vectors and semantic tokens per domain;
:meth:`IngestionStats.verify_against_baseline` compares them with
``.amalfa/ingestion-baseline.json`` (layout in the class docstring) and reports every metric
outside its tolerance as a :class:`Mismatch`.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from amalfa._atomic import atomic_write_text
from amalfa._text import parse_json, render_table, utc_now
from amalfa.errors import BaselineError
from amalfa.settings import Settings
from amalfa.stats._common import count_value, settings_or_load

__all__ = ["BASELINE_FILE_NAME", "DomainStats", "IngestionStats", "Mismatch"]

BASELINE_FILE_NAME = "ingestion-baseline.json"


@dataclass(slots=True)
class DomainStats:
    """What one ingestion produced in one domain."""

    nodes: int = 0
    edges: dict[str, int] = field(default_factory=dict)  # by edge type
    vectors: int = 0
    semantic_tokens: int = 0

    @property
    def edges_total(self) -> int:
        """All edges of every type."""
        return sum(self.edges.values())

    def metric(self, name: str) -> int:
        """A metric by its baseline name: nodes, vectors, semantic_tokens, edges.total, edges.T."""
        if name == "edges.total":
            return self.edges_total
        if name.startswith("edges."):
            return self.edges.get(name.removeprefix("edges."), 0)
        return int(getattr(self, name))


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A metric outside its tolerance: ``variance = |actual - expected| / expected``.

    When ``expected`` is 0, any other ``actual`` has infinite variance (the original treated it
    as 0 and so never noticed that something appeared from nothing).
    """

    domain: str
    metric: str
    expected: int
    actual: int
    delta: int
    variance: float
    tolerance: float


@dataclass(frozen=True, slots=True)
class _Baseline:
    source: Path
    version: str | None
    domains: dict[str, dict[str, int]]  # domain -> metric name -> expected
    tolerances: dict[str, float]  # metric family (nodes, edges, vectors, semantic_tokens)


_METRIC_FAMILIES = ("nodes", "edges", "vectors", "semantic_tokens")


def _variance(expected: int, actual: int) -> float:
    if expected == 0:
        return 0.0 if actual == 0 else math.inf
    return abs(actual - expected) / expected


class IngestionStats:
    """Per-domain ingestion counters and their verification against a baseline file.

    Domains are any names (``"persona"``, ``"experience"``...); a domain exists once something
    is recorded in it or it is named in the constructor.

    The baseline file (``.amalfa/ingestion-baseline.json`` by default) looks like this::

        {
          "version": "1.0",
          "description": "what this baseline was taken from",
          "domains": {
            "persona":    {"nodes": 185, "edges": {"total": 300, "RELATES_TO": 120},
                           "vectors": 185},
            "experience": {"nodes": 420, "edges": 1700, "vectors": 420,
                           "semantic_tokens": 900}
          },
          "tolerances": {"nodes": 0.05, "edges": 0.1, "vectors": 0.05, "semantic_tokens": 0.2}
        }

    ``nodes`` and ``edges`` are a number or an object with a ``total`` (edge types named next to
    ``total`` are checked too, with the edges tolerance). Only the metrics a domain names are
    checked. A metric family without a tolerance must match exactly. The original layout
    (domains at the top level, ``"tolerance"`` in the singular) is read as well.
    """

    def __init__(
        self,
        domains: Iterable[str] = (),
        *,
        baseline_path: str | Path | None = None,
        settings: Settings | None = None,
    ):
        self._metrics: dict[str, DomainStats] = {}
        for domain in domains:
            self._domain(domain)
        self._default_baseline_path = Path(baseline_path) if baseline_path is not None else None
        self._settings = settings
        self._baseline: _Baseline | None = None

    # -- counting ---------------------------------------------------------------------------

    def record_node(self, domain: str, count: int = 1) -> None:
        """Count ``count`` nodes created in ``domain``."""
        self._domain(domain).nodes += count_value(count, "count")

    def record_edge(self, domain: str, edge_type: str, count: int = 1) -> None:
        """Count ``count`` edges of ``edge_type`` created in ``domain``."""
        if not isinstance(edge_type, str) or not edge_type or edge_type == "total":
            raise ValueError(
                f"edge_type must be a non-empty name other than 'total', got {edge_type!r}"
            )
        stats = self._domain(domain)
        stats.edges[edge_type] = stats.edges.get(edge_type, 0) + count_value(count, "count")

    def record_vector(self, domain: str, count: int = 1) -> None:
        """Count ``count`` vectors stored in ``domain``."""
        self._domain(domain).vectors += count_value(count, "count")

    def record_semantic_tokens(self, domain: str, count: int = 1) -> None:
        """Count ``count`` semantic tokens extracted in ``domain``."""
        self._domain(domain).semantic_tokens += count_value(count, "count")

    def metrics(self) -> dict[str, DomainStats]:
        """The counters by domain (live objects: a copy is not made)."""
        return self._metrics

    def _domain(self, domain: str) -> DomainStats:
        if not isinstance(domain, str) or not domain:
            raise ValueError(f"domain must be a non-empty string, got {domain!r}")
        stats = self._metrics.get(domain)
        if stats is None:
            stats = self._metrics[domain] = DomainStats()
        return stats

    # -- the baseline -----------------------------------------------------------------------

    @property
    def has_baseline(self) -> bool:
        """Whether a baseline is loaded (verification is skipped without one)."""
        return self._baseline is not None

    def load_baseline(self, path: str | Path | None = None) -> bool:
        """Load the baseline from ``path`` (default: the constructor's, else the settings').

        A missing file warns and leaves verification off (returns False): a project that never
        took a baseline should still ingest. A file that exists but is malformed raises
        :class:`BaselineError`, because skipping a check the user set up would hide failures.
        """
        if path is None:
            path = self._default_baseline_path
        if path is None:
            path = settings_or_load(self._settings).folders.base / BASELINE_FILE_NAME
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._baseline = None
            warnings.warn(
                f"no baseline found at {path}; skipping baseline verification",
                UserWarning,
                stacklevel=2,
            )
            return False
        self._baseline = _parse_baseline(path, text)
        return True

    def verify_against_baseline(self) -> list[Mismatch]:
        """Every baseline metric outside its tolerance (an empty list when all are within).

        Without a loaded baseline this warns and returns an empty list.
        """
        baseline = self._baseline
        if baseline is None:
            warnings.warn(
                "no baseline loaded; skipping baseline verification", UserWarning, stacklevel=2
            )
            return []
        mismatches = []
        for domain, expected_metrics in baseline.domains.items():
            actual_stats = self._metrics.get(domain, DomainStats())
            for metric, expected in expected_metrics.items():
                actual = actual_stats.metric(metric)
                tolerance = baseline.tolerances.get(metric.split(".")[0], 0.0)
                variance = _variance(expected, actual)
                if variance > tolerance:
                    mismatches.append(
                        Mismatch(
                            domain, metric, expected, actual, actual - expected, variance, tolerance
                        )
                    )
        return mismatches

    # -- reporting --------------------------------------------------------------------------

    def summary(self) -> str:
        """The counters of every domain as text."""
        rule = "=" * 60
        lines = ["Ingestion summary", rule]
        for domain, stats in self._metrics.items():
            lines += [
                "",
                f"{domain}:",
                f"   Nodes:   {stats.nodes}",
                f"   Edges:   {stats.edges_total}",
            ]
            lines += [f"      {kind}: {n}" for kind, n in sorted(stats.edges.items())]
            lines += [
                f"   Vectors: {stats.vectors}",
                f"   Tokens:  {stats.semantic_tokens}",
            ]
        if not self._metrics:
            lines.append("(nothing recorded)")
        lines += ["", rule]
        return "\n".join(lines)

    def print_summary(self, *, file: IO[str] | None = None) -> None:
        """Print :meth:`summary` (to stdout unless ``file`` is given)."""
        print(self.summary(), file=file or sys.stdout)

    @staticmethod
    def verification_table(mismatches: list[Mismatch]) -> str:
        """The verification result as text: PASSED, or FAILED with one row per mismatch."""
        if not mismatches:
            return "Baseline verification: PASSED"
        header = ["Domain", "Metric", "Expected", "Actual", "Delta", "Variance"]
        rows = [[m.domain, m.metric, m.expected, m.actual, f"{m.delta:+d}", _percent(m.variance)]
                for m in mismatches]
        return "Baseline verification: FAILED\n" + render_table(header, rows)

    def print_verification(
        self, mismatches: list[Mismatch] | None = None, *, file: IO[str] | None = None
    ) -> list[Mismatch]:
        """Print the verification table (verifying now unless ``mismatches`` is given)."""
        if mismatches is None:
            mismatches = self.verify_against_baseline() if self.has_baseline else []
        print(self.verification_table(mismatches), file=file or sys.stdout)
        return mismatches

    def generate_report(self, path: str | Path) -> Path:
        """Write a Markdown report: a table per domain and the baseline violations, if any."""
        path = Path(path)
        baseline = self._baseline
        mismatches = self.verify_against_baseline() if baseline is not None else []
        outside = {(m.domain, m.metric) for m in mismatches}
        today = utc_now().date().isoformat()

        lines = [f"# Ingestion report: {today}", ""]
        if baseline is None:
            lines += ["No baseline loaded; counts are not verified.", ""]
        else:
            version = f" (version {baseline.version})" if baseline.version else ""
            lines += [f"Baseline: `{baseline.source}`{version}", ""]

        domains = list(self._metrics)
        if baseline is not None:
            domains += [d for d in baseline.domains if d not in self._metrics]
        for domain in domains:
            stats = self._metrics.get(domain, DomainStats())
            expected_metrics = baseline.domains.get(domain, {}) if baseline else {}
            names = [
                "nodes",
                "edges.total",
                *(f"edges.{t}" for t in sorted(stats.edges)),
                "vectors",
                "semantic_tokens",
            ]
            names += [n for n in expected_metrics if n not in names]
            lines += [
                f"## {domain}",
                "",
                "| Metric | Expected | Actual | Status |",
                "|--------|----------|--------|--------|",
            ]
            for name in names:
                actual = stats.metric(name)
                if name in expected_metrics:
                    status = "❌" if (domain, name) in outside else "✅"
                    expected_cell = str(expected_metrics[name])
                else:
                    status, expected_cell = "-", "-"
                lines.append(f"| {name} | {expected_cell} | {actual} | {status} |")
            lines.append("")

        if mismatches:
            lines += [
                "## Baseline violations",
                "",
                "| Domain | Metric | Expected | Actual | Delta | Variance | Tolerance |",
                "|--------|--------|----------|--------|-------|----------|-----------|",
            ]
            lines += [
                f"| {m.domain} | {m.metric} | {m.expected} | {m.actual} | {m.delta:+d} | "
                f"{_percent(m.variance)} | {_percent(m.tolerance)} |"
                for m in mismatches
            ]
            lines.append("")
        elif baseline is not None:
            lines += ["All baseline metrics are within tolerance.", ""]

        atomic_write_text(path, "\n".join(lines))
        return path


def _percent(fraction: float) -> str:
    return "inf" if math.isinf(fraction) else f"{fraction * 100:.1f}%"


def _parse_baseline(path: Path, text: str) -> _Baseline:
    """Validate a baseline file (see :class:`IngestionStats` for the layout)."""

    def fail(message: str) -> BaselineError:
        return BaselineError(f"baseline {path}: {message}")

    try:
        data = parse_json(text)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if not isinstance(data, dict):
        raise fail("expected a JSON object")

    def expect_count(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise fail(f"{key} must be an integer >= 0, got {json.dumps(value)}")
        return value

    if "domains" in data:
        raw_domains = data["domains"]
        if not isinstance(raw_domains, dict):
            raise fail("domains must be an object of domain name -> expected counts")
    else:  # the original layout: domains beside "tolerance" at the top level
        raw_domains = {k: v for k, v in data.items() if isinstance(v, dict) and "nodes" in v}
        if not raw_domains:
            raise fail("no domains found (expected a 'domains' object)")

    domains: dict[str, dict[str, int]] = {}
    for domain, raw in raw_domains.items():
        if not isinstance(raw, dict):
            raise fail(f"domains.{domain} must be an object")
        expected: dict[str, int] = {}
        for family in _METRIC_FAMILIES:
            if family not in raw:
                continue
            value, key = raw[family], f"domains.{domain}.{family}"
            if family in ("nodes", "edges") and isinstance(value, dict):
                if "total" not in value:
                    raise fail(f"{key} must have a 'total'")
                expected[f"{family}.total" if family == "edges" else "nodes"] = expect_count(
                    value["total"], f"{key}.total"
                )
                if family == "edges":  # node kinds are informational; edge types are checked
                    for kind, n in value.items():
                        if kind != "total":
                            expected[f"edges.{kind}"] = expect_count(n, f"{key}.{kind}")
            else:
                name = "edges.total" if family == "edges" else family
                expected[name] = expect_count(value, key)
        domains[domain] = expected

    raw_tolerances = data.get("tolerances", data.get("tolerance", {}))
    if not isinstance(raw_tolerances, dict):
        raise fail("tolerances must be an object of metric -> fraction")
    tolerances: dict[str, float] = {}
    for family, value in raw_tolerances.items():
        if family not in _METRIC_FAMILIES:
            continue  # e.g. the original's "description"
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (math.isfinite(value) and value >= 0)
        ):
            raise fail(f"tolerances.{family} must be a number >= 0, got {json.dumps(value)}")
        tolerances[family] = float(value)

    version = data.get("version")
    return _Baseline(
        source=path,
        version=str(version) if version is not None else None,
        domains=domains,
        tolerances=tolerances,
    )

