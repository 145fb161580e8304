"""Failing paths: each error counted, logged once per episode, retried with back-off.

A path that cannot be opened, listed or watched is tried again after ``first`` seconds,
then twice as long each time up to :data:`MAX_BACKOFF`; the first failure and each change
of error are logged, a success after failures is logged once.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

log = structlog.get_logger("gw502d.follower")

MAX_BACKOFF = 60.0


@dataclass(slots=True)
class _Trouble:
    error: str
    delay: float
    retry_at: float


class Backoff:
    """Trouble per key (a path, or a directory's watch)."""

    def __init__(self, first: float, *, logged: bool = True) -> None:
        self._first = first
        self._logged = logged  # False: the caller logs (the inotify watcher does)
        self._troubles: dict[str, _Trouble] = {}

    def fail(self, key: str, error: str, now: float, *, event: str = "cannot read log",
             **context: str) -> float:
        """Note a failure; return when to try again."""
        t = self._troubles.get(key)
        if t is None:
            if self._logged:
                log.warning(event, path=key, error=error, **context)
            t = self._troubles[key] = _Trouble(error, self._first, now)
        else:
            t.delay = min(t.delay * 2, MAX_BACKOFF)
            if t.error != error and self._logged:
                log.warning(event, path=key, error=error, **context)
            t.error = error
        t.retry_at = now + t.delay
        return t.retry_at

    def waiting(self, key: str, now: float) -> bool:
        """Whether *key* failed and its next try is not due yet."""
        t = self._troubles.get(key)
        return t is not None and now < t.retry_at

    def failing(self, key: str) -> bool:
        return key in self._troubles

    def recovered(self, key: str, *, event: str = "log readable again") -> None:
        if self._troubles.pop(key, None) is not None and self._logged:
            log.info(event, path=key)
