"""The journal sources of ``gw502d run``: a :class:`JournalFollower` thread each, and their
cursors saved in the file follower's snapshot.

Exactly once over SIGKILL: a journal follower hands records to the pipeline with its own
lock held (its lock, then the pipeline's). The snapshot, taken in the file follower's
thread, holds every journal follower's lock while it reads the counters (the pipeline's
lock inside) and the cursors, so cursors, file offsets and counters are of one instant:
a record is either counted and behind its saved cursor, or neither.

A reload starts the sources that are new, stops those that are gone and restarts those
whose matches changed at the cursor the old one reached (a cursor is a position in the
whole journal, whatever the matches). A source stays in :attr:`Journals.running` until
its successor takes its place, so no snapshot misses its cursor.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from gw502d.source.journal import (
    JOURNALCTL,
    JournalFollower,
    JournalStats,
    RecordsCallback,
    source_args,
)
from gw502d.source.spec import JournalSpec

log = structlog.get_logger("gw502d.daemon")

SNAPSHOT_KEY = "journal"  # the snapshot's {name: {"cursor": C, "journal": where}}
_JOIN_TIMEOUT = 15.0


@dataclass(eq=False)
class _Source:
    """One running journal follower and its thread."""

    follower: JournalFollower
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    failed: bool = False

    @property
    def spec(self) -> JournalSpec:
        return self.follower.spec


def _journal(spec: JournalSpec) -> str:
    """Which journal a spec reads: a cursor is only restored into the same one."""
    return " ".join(source_args(spec)) or "host"


class Journals:
    """The configured journal sources; every method is called from the main thread but
    :meth:`frozen` (the snapshot's thread) and the readers (any thread)."""

    def __init__(self, specs: Sequence[JournalSpec], on_records: RecordsCallback, *,
                 saved: Any, start_at: Literal["end", "beginning"], max_line: int,
                 journalctl: Sequence[str] = JOURNALCTL) -> None:
        self._on_records = on_records
        self._start_at = start_at
        self._max_line = max_line
        self._journalctl = tuple(journalctl)
        self._lock = threading.Lock()  # guards running (swapped whole)
        self.running: dict[str, _Source] = {}
        cursors = _saved_cursors(saved)
        for spec in specs:
            follower = self._follower(spec)
            entry = cursors.get(spec.name)
            if entry is not None and entry[1] == _journal(spec):
                follower.restore(entry[0])
            self.running[spec.name] = _Source(follower)

    def _follower(self, spec: JournalSpec) -> JournalFollower:
        return JournalFollower(spec, self._on_records, start_at=self._start_at,
                               max_line=self._max_line, journalctl=self._journalctl)

    # -- lifecycle (main thread) ---------------------------------------------------------

    def start(self) -> None:
        """Start a thread per source not running yet."""
        for source in self.running.values():
            if source.thread is None:
                source.thread = threading.Thread(target=self._run, args=(source,),
                                                 name=f"journal:{source.spec.name}", daemon=True)
                source.thread.start()

    def _run(self, source: _Source) -> None:
        try:
            source.follower.run(source.stop)
        except Exception:
            log.exception("journal follower failed", log=source.spec.name)
            source.failed = True

    def stop(self) -> None:
        """Stop every source and wait for it (journalctl is stopped with it)."""
        sources = list(self.running.values())
        for source in sources:
            _signal_stop(source)
        for source in sources:
            _join(source)

    def set_specs(self, specs: Sequence[JournalSpec]) -> None:
        """Follow *specs* from now on (a reload); see the module docstring."""
        wanted = {spec.name: spec for spec in specs}
        old = self.running
        going = [s for name, s in old.items()
                 if name not in wanted or wanted[name] != s.spec]
        for source in going:
            _signal_stop(source)
        for source in going:
            _join(source)
        running = {name: s for name, s in old.items() if s not in going}
        for name, spec in wanted.items():
            if name in running:
                continue
            follower = self._follower(spec)
            previous = old.get(name)
            if previous is not None and _journal(previous.spec) == _journal(spec):
                follower.restore(previous.follower.cursor)  # the matches changed: go on
            running[name] = _Source(follower)
        with self._lock:
            self.running = running
        for source in going:
            if source.spec.name not in wanted:
                log.info("journal source removed", log=source.spec.name)
        self.start()

    # -- the snapshot (the file follower's thread) ----------------------------------------

    @contextlib.contextmanager
    def frozen(self) -> Iterator[dict[str, dict[str, str]]]:
        """Hold every source's lock (no record is counted meanwhile) and give the cursors
        to save: read the counters inside the ``with`` and they agree with them."""
        with self._lock:
            sources = list(self.running.values())
        with contextlib.ExitStack() as stack:
            for source in sources:  # always in the same order: no deadlock between two
                stack.enter_context(source.follower.lock)
            yield {s.spec.name: {"cursor": s.follower.cursor, "journal": _journal(s.spec)}
                   for s in sources if s.follower.cursor is not None}

    # -- what the endpoints read (any thread) ---------------------------------------------

    def stats(self) -> dict[str, JournalStats]:
        return {name: s.follower.stats() for name, s in self.running.items()}

    def problems(self) -> dict[str, str]:
        """Per source that cannot be followed now, why (for /healthz)."""
        out = {}
        for name, s in self.running.items():
            if s.failed:
                out[name] = "journal follower failed: see the log"
            elif (problem := s.follower.problem) is not None:
                out[name] = problem
            elif s.thread is not None and not s.follower.alive:
                out[name] = "journal follower not running (starting, stopping or stuck)"
        return out

    def followed(self) -> int:
        """How many sources have journalctl running and no problem."""
        problems = self.problems()
        return sum(1 for name, s in self.running.items()
                   if name not in problems and s.follower.pid is not None)


def _signal_stop(source: _Source) -> None:
    source.stop.set()
    source.follower.wake()


def _join(source: _Source) -> None:
    if source.thread is not None:
        source.thread.join(_JOIN_TIMEOUT)
        if source.thread.is_alive():
            log.error("journal follower did not stop", log=source.spec.name)


def _saved_cursors(saved: Any) -> Mapping[str, tuple[str, str]]:
    """``{name: (cursor, journal)}`` of a snapshot; anything malformed is left out (the
    follower checks the cursor itself)."""
    if not isinstance(saved, dict):
        return {}
    return {name: (entry["cursor"], entry["journal"]) for name, entry in saved.items()
            if isinstance(entry, dict) and isinstance(entry.get("cursor"), str)
            and isinstance(entry.get("journal"), str)}
