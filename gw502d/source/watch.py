"""Wake-up hints from inotify (watchdog's ``InotifyFD``) on the followed files' directories.

The events are hints, never the truth: the follower's periodic ``os.stat`` check decides
what happened. The kernel's caveats that make this necessary:

- inotify watches inodes, not names: a directory moved away keeps its watch under the new
  name, so a recreated directory needs a new watch (the stat check notices and calls
  ``watch`` again). A deleted directory's watch ends (IN_IGNORED).
- Each user has ``fs.inotify.max_user_watches`` watches and ``max_user_instances``
  instances; watchdog raises OSError when either runs out. It does not raise for EACCES
  (it returns watch descriptor -1), so that is checked here.
- The kernel queue holds ``fs.inotify.max_queued_events`` events; past that it drops them
  and queues IN_Q_OVERFLOW, which watchdog's ``InotifyFD`` passes to ``on_queue_overflow``
  (its Observer layer does nothing more with it), and the follower re-checks everything.
- Consecutive identical events are merged by the kernel only while unread.

Why ``InotifyFD`` (watchdog 7) and not ``Observer.schedule``: the Observer moves every
event through three threads (reader, emitter, dispatcher), about 130 us of CPU per
write() (13 % of a core at 1k lines/s, measured); one reader thread calling back here
costs half of that, and idle it blocks in poll() with no timer. The rest is saved by
edge triggering: the first append after a quiet spell turns the directory's IN_MODIFY off
(:meth:`Watcher.disarm`), the follower polls it every 10 ms while it keeps growing and
turns IN_MODIFY back on when a poll finds nothing (about 2 % of a core at 10k lines/s).
Watching the parent directory sees rename, create and delete of the name, with one watch
per directory.
"""

# ruff: noqa: PTH118 - event names are joined to the str directory watchdog reports

from __future__ import annotations

import os
from collections.abc import Callable

import structlog
from watchdog.observers.inotify_c import (
    CallbackId,
    InotifyConstants,
    InotifyEvent,
    InotifyFD,
    Mask,
    WatchDescriptor,
)

log = structlog.get_logger("gw502d.follower")

_QUIET_MASK = Mask(InotifyConstants.IN_ATTRIB | InotifyConstants.IN_CREATE
                   | InotifyConstants.IN_DELETE | InotifyConstants.IN_MOVED_FROM
                   | InotifyConstants.IN_MOVED_TO | InotifyConstants.IN_DELETE_SELF
                   | InotifyConstants.IN_MOVE_SELF)
_MASK = Mask(_QUIET_MASK | InotifyConstants.IN_MODIFY)
_DISARM, _REARM = CallbackId(1), CallbackId(2)  # never an id() of a live object

Ident = tuple[int, int]
Notify = Callable[[str, str], None]  # (kind: "modified" for appends, else "changed"; path)


class _DirCallback:
    """Turns one directory's raw events into (kind, path) hints; runs in the reader thread."""

    def __init__(self, watcher: Watcher, directory: str) -> None:
        self._watcher = watcher
        self._dir = directory

    def on_event(self, event: InotifyEvent) -> None:
        path = os.path.join(self._dir, os.fsdecode(event.name)) if event.name else self._dir
        modified = event.mask & InotifyConstants.IN_MODIFY and not event.is_directory
        self._watcher.notify("modified" if modified else "changed", path)

    def on_watch_deleted(self, wd: WatchDescriptor) -> None:
        self._watcher.notify("changed", self._dir)

    def on_queue_overflow(self) -> None:
        self._watcher.on_overflow()


class _Ignore:
    """A callback that is registered only while a watch's mask is being changed."""

    def on_event(self, event: InotifyEvent) -> None:
        pass

    def on_watch_deleted(self, wd: WatchDescriptor) -> None:
        pass

    def on_queue_overflow(self) -> None:
        pass


class Watcher:
    """One inotify instance with a watch per directory; failures fall back to polling.

    ``start`` or ``watch`` returning False means the follower relies on its stat check
    for those paths; each failure is logged once per directory until a watch succeeds.
    """

    def __init__(self, notify: Notify, on_overflow: Callable[[], None]) -> None:
        self.notify = notify
        self.on_overflow = on_overflow
        self._inotify: InotifyFD | None = None
        self._watches: dict[str, tuple[Ident, WatchDescriptor, CallbackId]] = {}
        self._failing: set[str] = set()

    def start(self) -> bool:
        """Start the inotify reader thread; False (logged) if inotify is unavailable."""
        try:
            inotify = InotifyFD()
        except OSError as e:
            log.warning("inotify unavailable, polling with stat only", error=str(e))
            return False
        inotify.start()
        self._inotify = inotify
        return True

    def watched(self) -> dict[str, Ident]:
        """Directory -> the (st_dev, st_ino) it had when it was watched."""
        return {d: ident for d, (ident, _, _) in self._watches.items()}

    def watch(self, directory: str, ident: Ident) -> bool:
        """Watch ``directory`` (again, if it was replaced); False if inotify refused."""
        if self._inotify is None:
            return False
        self.unwatch(directory)
        callback = _DirCallback(self, directory)
        cid = CallbackId(id(callback))  # two paths of one directory share its watch
        try:
            wd = self._inotify.add_callback(os.fsencode(directory or "."), _MASK, callback, cid)
            if wd < 0:  # EACCES, which watchdog does not raise
                self._inotify.remove_callbacks([(wd, cid)])
                raise PermissionError(13, "permission denied")
        except OSError as e:
            if directory not in self._failing:
                log.warning("cannot watch directory, polling it with stat",
                            directory=directory, error=str(e))
                self._failing.add(directory)
            return False
        if directory in self._failing:
            log.info("watching directory again", directory=directory)
            self._failing.discard(directory)
        self._watches[directory] = (ident, wd, cid)
        return True

    def disarm(self, directory: str) -> None:
        """Stop IN_MODIFY for ``directory`` while the follower polls it (reader thread).

        A busy log would otherwise cost a wake-up of two threads per write(); the
        follower calls :meth:`rearm` once a poll of the directory finds nothing new.
        """
        self._set_mask(directory, _QUIET_MASK, _DISARM)

    def rearm(self, directory: str) -> None:
        """Turn IN_MODIFY for ``directory`` back on (the follower's thread)."""
        self._set_mask(directory, _MASK, _REARM)

    def _set_mask(self, directory: str, mask: Mask, id_: CallbackId) -> None:
        # inotify_add_watch on a watched inode replaces its mask and returns its wd;
        # watchdog has no call for that alone, so a callback is added and removed.
        inotify = self._inotify
        if inotify is None or directory not in self._watches:
            return
        try:
            wd = inotify.add_callback(os.fsencode(directory or "."), mask, _Ignore(), id_)
            inotify.remove_callbacks([(wd, id_)])
        except OSError:
            pass  # the directory went away: the stat check watches its successor

    def unwatch(self, directory: str) -> None:
        """Drop the watch of ``directory`` if there is one."""
        entry = self._watches.pop(directory, None)
        if entry is not None and self._inotify is not None:
            # A deleted directory's watch is already gone: watchdog ignores that (EINVAL).
            self._inotify.remove_callbacks([(entry[1], entry[2])])

    def stop(self) -> None:
        """Stop the reader thread and drop every watch."""
        if self._inotify is None:
            return
        self._inotify.stop()
        self._inotify.join()
        self._inotify = None
        self._watches.clear()
