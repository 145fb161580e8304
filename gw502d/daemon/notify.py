"""systemd's notify protocol (sd_notify(3)) without a library: one datagram per state.

``Type=notify`` units get ``$NOTIFY_SOCKET``, a path or an abstract name (leading ``@``);
``WatchdogSec=`` sets ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``, the process it is meant
for). Outside systemd nothing is set and every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time

import structlog

log = structlog.get_logger("gw502d.daemon")


class Notifier:
    """Sends states to systemd; failures are logged once, never raised."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self._address = address if address.startswith(("/", "\0")) else None
        self._failing = False

    def send(self, *states: str) -> None:
        """Send ``READY=1``, ``STOPPING=1``, ... as one datagram."""
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto("\n".join(states).encode(), self._address)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot notify systemd", error=str(exc))
                self._failing = True
            return
        self._failing = False

    def reloading(self) -> None:
        """RELOADING=1 with the monotonic time systemd (>= 253) asks for."""
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={now_usec}")


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec=), or None if not asked."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
