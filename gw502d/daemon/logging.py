"""structlog setup: JSON lines on stdout (journald, Kubernetes), readable text on a terminal.

Records from the standard library's ``logging`` (watchdog, for one) go through the same
processors, so the stream stays one format. Warnings and errors that repeat are let
through once a minute per (event, log, path), with the number left out in between.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REPEAT_INTERVAL = 60.0
_RATE_LIMITED = frozenset({"warning", "error", "critical"})
_MAX_TRACKED = 1024


class RepeatLimiter:
    """Processor: drops a warning or error repeated within *interval* seconds.

    The next one that passes carries ``suppressed``, how many were dropped. The key is the
    event with the log and path it is about, so one bad file does not hide another.
    """

    def __init__(self, interval: float = REPEAT_INTERVAL) -> None:
        self._interval = interval
        self._lock = threading.Lock()  # loggers run in every thread
        self._seen: dict[tuple[Any, ...], tuple[float, int]] = {}

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        # rate_limit=False: every occurrence matters (a reload's outcome answers an action)
        if not event.pop("rate_limit", True) or method not in _RATE_LIMITED:
            return event
        key = (method, event.get("event"), event.get("log"), event.get("path"))
        now = time.monotonic()
        with self._lock:
            until, dropped = self._seen.get(key, (0.0, 0))
            if now < until:
                self._seen[key] = (until, dropped + 1)
                raise structlog.DropEvent
            if len(self._seen) >= _MAX_TRACKED:
                self._seen = {k: v for k, v in self._seen.items() if v[0] > now}
            self._seen[key] = (now + self._interval, 0)
        if dropped:
            event["suppressed"] = dropped
        return event


def configure(stream: TextIO = sys.stdout, level: int = logging.INFO) -> None:
    """Set up structlog and the standard library's logging once, at start."""
    shared: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if stream.isatty():
        renderer = structlog.dev.ConsoleRenderer()
    else:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        # The limiter only for structlog's own loggers: a DropEvent inside logging's
        # formatter would not drop the record, and watchdog's warnings are rare anyway.
        processors=[*shared, RepeatLimiter(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
