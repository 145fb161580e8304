"""What inotify said since the follower last looked: wake-up hints, never the truth.

watchdog's reader thread calls :meth:`Hints.notify`; the follower's thread takes the hints
with :meth:`Hints.take`. An append to a followed file names it (read it now); any other
event in a watched directory (create, rename, delete) asks for a look at the file system;
a queue overflow too, for everything, since events were lost.

Edge triggering: the first append after a quiet spell turns the directory's IN_MODIFY off
(``disarm``); the follower polls the directory every :data:`BURST_WINDOW` while it keeps
growing and turns IN_MODIFY on again when a poll finds nothing (``rearm``), so a busy log
costs one read per window instead of a wake-up of two threads per ``write()``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

BURST_WINDOW = 0.01  # while a directory is busy, read it at most this often


@dataclass(slots=True)
class Taken:
    """The hints of one turn of the follower's loop."""

    paths: set[str]
    dirs: set[str]  # directories whose IN_MODIFY was turned off: poll them
    look: bool  # something besides appends happened: look at the file system
    drain: bool  # a rotated file being drained grew
    overflow: bool


@dataclass(slots=True)
class Hints:
    """Hints from watchdog's thread, guarded by a lock; ``wake`` wakes the follower."""

    wake: threading.Event
    disarm: Callable[[str], None]
    lock: threading.Lock = field(default_factory=threading.Lock)
    hot: frozenset[str] = frozenset()  # followed paths (swapped whole by the follower)
    drain_dirs: frozenset[str] = frozenset()  # directories of drained files
    _paths: set[str] = field(default_factory=set)
    _dirs: set[str] = field(default_factory=set)
    _look: bool = False
    _drain: bool = False
    _overflow: bool = False

    def notify(self, kind: str, path: str) -> None:
        """A raw event (watchdog's thread): ``modified`` for appends, else ``changed``."""
        if kind != "modified":
            self.ask_look()
            return
        d = os.path.dirname(path)  # noqa: PTH120 - watchdog gives str paths
        hot = path in self.hot
        if not hot and d not in self.drain_dirs:
            return  # another program's file in the same directory
        # IN_MODIFY off before the hint is recorded, so the follower's rearm (after it
        # polled the directory for this hint) always comes after this disarm.
        self.disarm(d)
        with self.lock:
            if hot:
                self._paths.add(path)
            else:
                self._drain = True
            self._dirs.add(d)
        self.wake.set()

    def ask_look(self) -> None:
        """Something changed (or the follower wants a look): look at the file system."""
        with self.lock:
            self._look = True
        self.wake.set()

    def overflowed(self) -> None:
        with self.lock:
            self._overflow = self._look = True
        self.wake.set()

    def take(self) -> Taken:
        with self.lock:
            taken = Taken(self._paths, self._dirs, self._look, self._drain, self._overflow)
            self._paths, self._dirs = set(), set()
            self._look = self._drain = self._overflow = False
        return taken
