"""Live sync: watch the configured sources and keep the graph in step with the files.

:class:`Watcher` waits for file changes with ``watchfiles`` (inotify/FSEvents, polling where
those are missing) and answers each batch with one run of the same incremental pipeline as
``amalfa init`` (:func:`amalfa.ingest.ingest` over the settings' ``sources``):

- **Why the whole sources, not only the changed files.** The pipeline skips unchanged files by
  their hash (read, not embedded), re-embeds only the passages whose text changed, removes nodes
  whose file is gone, and recomputes links over every file, so a new file also gains the links
  that already pointed at it. Handing it only the changed paths would leave those links out.
- **Batches.** ``watchfiles`` groups the changes of up to ``watch.debounce`` ms (settings; it
  yields as soon as the files have been quiet for 50 ms). An editor's save-by-rename (write
  ``.note.md.tmp``, rename it over ``note.md``) lands in one batch, so it is one update.
- **Which changes count.** Markdown files under a configured source, not excluded by
  ``excludePatterns``, whose kind (added, modified, deleted) is in ``events``; everything else
  (the database's own files, editor swap files, other folders) never starts a run.
- **One writer.** :class:`WatcherLock` takes an exclusive ``flock`` on ``<database>.watch.lock``
  and writes the holder's pid in it; a second watcher on the same database gets
  :class:`~amalfa.errors.WatcherRunningError` naming that pid. The operating system drops the
  lock when the holder dies, so a crash leaves nothing stale.
- **No gap at start.** The watch is in place before the first run (which catches up on what
  changed while no watcher ran), so a file written at any moment is seen.
- **Stopping.** SIGINT and SIGTERM set a stop event (when :meth:`Watcher.run` is on the main
  thread); a batch being written finishes its transaction first, so nothing is half-written.
- **Errors.** A batch that fails (a file that does not parse, the disk full) is logged and
  reported, and the watcher goes on with the next one.

Each batch is logged with :class:`~amalfa.stats.StatsLogger` as a ``watch`` run.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amalfa.errors import AmalfaError, WatcherRunningError
from amalfa.limits import DEBOUNCE_MS
from amalfa.settings import WATCH_EVENTS

if TYPE_CHECKING:
    from amalfa.db import ResonanceDB
    from amalfa.embedder import Embedder
    from amalfa.ingest import IngestResult
    from amalfa.settings import Settings

__all__ = ["EVENTS", "WatchBatch", "Watcher", "WatcherLock", "lock_path_for"]

#: the kinds of change a watcher can answer (the settings' ``watch.events`` chooses among them)
EVENTS = WATCH_EVENTS
# how often (ms) the watcher checks its stop event while nothing changes
_STOP_POLL_MS = 200


def lock_path_for(db_path: str | os.PathLike[str]) -> Path:
    """The watcher lock file of a database: ``<database>.watch.lock`` beside it."""
    path = Path(db_path)
    return path.with_name(f"{path.name}.watch.lock")


class WatcherLock:
    """An exclusive, process-wide lock on one database's watcher (see the module notes)."""

    def __init__(self, db_path: str | os.PathLike[str]) -> None:
        self.db_path = Path(db_path)
        self.path = lock_path_for(db_path)
        self._fd: int | None = None

    def holder(self) -> int | None:
        """The pid written by the process holding (or last holding) the lock, if readable."""
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() else None

    def acquire(self) -> None:
        """Take the lock or raise WatcherRunningError naming the holder's pid."""
        import fcntl

        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = self.holder()
            who = f" (pid {pid})" if pid else ""
            raise WatcherRunningError(
                f"amalfa watch is already running for {self.db_path}{who}; "
                "one watcher writes a database at a time", pid) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> WatcherLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


@dataclass(slots=True)
class WatchBatch:
    """One answered batch: the changes (kind, root-relative path) and what the run did."""

    changes: list[tuple[str, str]]
    result: IngestResult | None = None
    error: str | None = None
    seconds: float = 0.0
    started: float = field(default_factory=time.time)

    def summary(self) -> str:
        if self.error is not None:
            return f"{len(self.changes)} change(s): failed: {self.error}"
        result = self.result
        assert result is not None
        return (f"{len(self.changes)} change(s): {len(result.added)} added, "
                f"{len(result.updated)} updated, {len(result.removed)} removed, "
                f"{result.passages_embedded} passages embedded in {self.seconds:.2f} s")


class Watcher:
    """Keeps the database of ``settings`` in step with its sources (see the module notes).

    ``db_path`` defaults to the settings' database (created when missing); ``embedder`` to the
    model the database recorded, else the settings' one. ``debounce_ms`` defaults to the
    settings' ``watch.debounce``; ``events`` to the settings' ``watch.events`` (every kind). ``on_batch`` is called after each
    batch (and after the first catch-up run) with its :class:`WatchBatch`; ``on_start`` once the
    lock is held, with the folders being watched.
    """

    def __init__(self, settings: Settings, *, db_path: str | os.PathLike[str] | None = None,
                 embedder: Embedder | None = None, debounce_ms: int | None = None,
                 events: Iterable[str] | None = None,
                 on_batch: Callable[[WatchBatch], None] | None = None,
                 on_start: Callable[[list[Path]], None] | None = None) -> None:
        from amalfa.ingest.discover import Excludes, Scope

        self.settings = settings
        self.root = Path(settings.root)
        self.db_path = Path(db_path) if db_path is not None else settings.database_path
        self.sources = list(settings.sources)
        self.debounce_ms = DEBOUNCE_MS.check(
            settings.watch.debounce_ms if debounce_ms is None else debounce_ms, "debounce_ms")
        self.events = frozenset(settings.watch.events if events is None else events)
        unknown = self.events - set(EVENTS)
        if unknown or not self.events:
            raise ValueError(f"events must be some of {', '.join(EVENTS)}; got "
                             f"{', '.join(sorted(self.events)) or 'none'}")
        self.on_batch = on_batch
        self.on_start = on_start
        self.stop_event = threading.Event()
        self.batches = 0
        self._embedder = embedder
        self._scope = Scope(self.sources, self.root)
        self._excludes = Excludes(settings.exclude_patterns)

    # -- which changes count ------------------------------------------------------------------

    def watch_paths(self) -> list[Path]:
        """The existing folders to watch: each source's fixed part (a file's folder)."""
        from amalfa.reader import source_base

        paths: list[Path] = []
        for source in self.sources:
            base = self.root / source_base(source)
            while not base.exists() and base != self.root:
                base = base.parent  # a source not created yet: watch where it will appear
            if base.is_file():
                base = base.parent
            if not any(base == known or known in base.parents for known in paths):
                paths = [known for known in paths if base not in known.parents] + [base]
        return paths

    def wanted(self, kind: str, path: str) -> bool:
        """Whether a change of ``kind`` to ``path`` (absolute) should start a run."""
        from amalfa.ingest.discover import is_markdown, relative_posix

        if kind not in self.events or not is_markdown(path):
            return False
        try:
            rel = relative_posix(Path(path), self.root)
        except ValueError:
            return False
        if not self._scope.contains(rel):
            return False
        if kind == "deleted" or not os.path.isfile(path):
            return True  # gone: the run removes its node (an excluded one never had one)
        return not self._excludes.match(rel)  # the same matcher the ingest's discovery uses

    # -- running ------------------------------------------------------------------------------

    def _embedding_model(self, db: ResonanceDB) -> Embedder:
        if self._embedder is None:
            from amalfa._model_choice import embedder_for_database

            self._embedder = embedder_for_database(self.settings, db)
        return self._embedder

    def sync(self, db: ResonanceDB, changes: list[tuple[str, str]]) -> WatchBatch:
        """One run of the pipeline over the sources, logged; errors are caught into the batch."""
        from amalfa.ingest import ingest
        from amalfa.stats import StatsLogger

        batch = WatchBatch(changes)
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a watcher has no one to show them to
                batch.result = ingest(self.sources, db=db, embedder=self._embedding_model(db),
                                      root=self.root,
                                      exclude_patterns=self.settings.exclude_patterns)
        except (AmalfaError, OSError, ValueError) as exc:
            batch.error = f"{type(exc).__name__}: {exc}"
        batch.seconds = time.perf_counter() - start
        self.batches += 1
        fields: dict[str, Any] = {"changes": len(changes), "duration_ms": round(
            batch.seconds * 1000, 1), "errors": int(batch.error is not None)}
        if batch.result is not None:
            fields.update(added=len(batch.result.added), updated=len(batch.result.updated),
                          removed=len(batch.result.removed),
                          passages_embedded=batch.result.passages_embedded)
        else:
            fields["error"] = batch.error
        try:
            StatsLogger(settings=self.settings).log_run("watch", **fields)
        except OSError:
            pass  # the run log is a record, not a reason to stop syncing
        if self.on_batch is not None:
            self.on_batch(batch)
        return batch

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batch in progress (callable from any thread)."""
        self.stop_event.set()

    def run(self) -> None:
        """Take the lock, catch up once, then answer batches until :meth:`stop` (or SIGINT or
        SIGTERM). Raises WatcherRunningError when another watcher holds the database."""
        import watchfiles

        from amalfa.db import ResonanceDB

        with WatcherLock(self.db_path), _stop_on_signals(self.stop_event):
            paths = self.watch_paths()
            if self.on_start is not None:
                self.on_start(paths)
            with ResonanceDB(self.db_path, create=True) as db:
                kinds = {watchfiles.Change.added: "added", watchfiles.Change.modified: "modified",
                         watchfiles.Change.deleted: "deleted"}
                caught_up = False
                # yield_on_timeout: the first (empty) yield comes once the watch is in place, and
                # the catch-up run starts only then, so no change can fall between the two
                for raw in watchfiles.watch(
                        *paths, debounce=max(self.debounce_ms, 50), step=50,
                        stop_event=self.stop_event, rust_timeout=_STOP_POLL_MS,
                        yield_on_timeout=True, raise_interrupt=False):
                    changes = [(kind, _relative(path, self.root)) for kind, path in
                               sorted({(kinds[change], path) for change, path in raw})
                               if self.wanted(kind, path)]
                    if changes or not caught_up:
                        self.sync(db, changes)
                        caught_up = True
                    if self.stop_event.is_set():
                        break


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path


class _stop_on_signals:  # noqa: N801 - used as a context manager, reads as one
    """SIGINT and SIGTERM set ``event`` while inside (main thread only; elsewhere a no-op)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for number in (signal.SIGINT, signal.SIGTERM):
            self.previous[number] = signal.signal(number, lambda *_: self.event.set())

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
