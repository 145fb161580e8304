"""``gw502d scan``: classify whole files (plain, gzip, stdin) with the daemon's engine."""

from __future__ import annotations

import gzip
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from gw502d.classify.matcher import Classifier, Hit
from gw502d.classify.tally import Tally
from gw502d.parse.record import record_start
from gw502d.remediate import DEFAULT_WINDOW, Correlator, Timeline, remediation_for
from gw502d.remediate.correlate import WATCHED
from gw502d.source.lines import iter_lines

GZIP_MAGIC = b"\x1f\x8b"


class InputError(OSError):
    """An input that cannot be read; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One incident line found by a scan (the jsonl record)."""

    path: str
    line: int
    hit: Hit

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "line": self.line, "source": self.hit.incident.source,
            "incident": self.hit.incident.id, "fields": self.hit.facts,
            "remediation": remediation_for(self.hit.incident, self.hit.facts),
        }


@dataclass(slots=True)
class ScanResult:
    """Totals of a scan; the tally holds the per-incident numbers, the correlator the root
    causes found across all inputs (``uncorrelated``: events beyond the timeline's cap)."""

    tally: Tally
    correlator: Correlator = field(default_factory=Correlator)
    uncorrelated: int = 0
    lines: int = 0
    bytes: int = 0
    files: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def expand(paths: list[str]) -> list[str]:
    """Directories become their files (sorted, recursively); ``-`` stays stdin."""
    out: list[str] = []
    for p in paths:
        if p != "-" and Path(p).is_dir():
            out.extend(str(f) for f in sorted(Path(p).rglob("*")) if f.is_file())
        else:
            out.append(p)
    return out


@contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    """Open a log for reading as bytes; gzip is recognised by its magic, not its name."""
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        raw = Path(path).open("rb")  # noqa: SIM115 - closed below, may be wrapped
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        if raw.read(2) == GZIP_MAGIC:
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw) as gz:
                yield gz  # type: ignore[misc]
        else:
            raw.seek(0)
            yield raw
    finally:
        raw.close()


def _blocks(path: str, max_line: int) -> Iterator[list[bytes]]:
    """The lines of *path* per block; any read failure becomes an :class:`InputError`."""
    try:
        with open_input(path) as f:
            yield from iter_lines(f, max_line)
    except InputError:
        raise
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{path}: {exc}") from exc


def scan(classifier: Classifier, paths: list[str], *, max_line: int = 65536,
         on_occurrence: Callable[[Occurrence], None] | None = None,
         progress: Callable[[int], None] | None = None,
         window: float = DEFAULT_WINDOW) -> ScanResult:
    """Classify every line of *paths* in order, then join the events of all of them by
    time into root causes (see :class:`~gw502d.remediate.Timeline`). Unreadable inputs
    are recorded, not fatal."""
    timeline = Timeline()
    result = ScanResult(Tally(classifier, timeline.hook(classifier.catalog.keys), watch=WATCHED))
    tally = result.tally
    for path in expand(paths):
        base = 0
        try:
            for lines in _blocks(path, max_line):
                if on_occurrence is None:
                    tally.feed(lines)
                else:
                    for n, hit in tally.hits(lines):
                        if not hit.incident.companion:
                            first = record_start(lines, n, hit.incident.source)
                            on_occurrence(Occurrence(path, base + first + 1, hit))
                base += len(lines)
                if progress is not None:
                    progress(sum(len(line) + 1 for line in lines))
        except InputError as exc:
            result.errors.append(str(exc))
            continue
        finally:
            result.lines += base
        result.files.append(path)
    result.correlator = timeline.correlate(window)
    result.uncorrelated = timeline.dropped
    return result


def input_size(paths: list[str]) -> int:
    """Bytes on disk of the inputs (for the progress bar); 0 when unknown."""
    total = 0
    for p in expand(paths):
        if p == "-":
            return 0
        try:
            total += Path(p).stat().st_size
        except OSError:
            continue
    return total
