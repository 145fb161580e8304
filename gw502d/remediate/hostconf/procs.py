"""A running server's command line, working directory and environment, from /proc.

/proc/PID/cmdline is readable by every user unless /proc is mounted with hidepid or the
reader runs under systemd's ProtectProc=invisible (then other users' processes are not
there at all); /proc/PID/cwd and /proc/PID/environ need the same user or root. A server
that renames itself (uWSGI's procname options, gunicorn with setproctitle:
``gunicorn: master [app]``) has overwritten its arguments: then they are not read.
"""

# Paths stay strings exactly as the servers name them (pathlib would normalise them).
# ruff: noqa: PTH115

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gw502d.remediate.hostconf.result import Unreadable, os_reason

PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class Process:
    pid: int
    ppid: int
    argv: tuple[str, ...]
    cwd: str | None

    @property
    def label(self) -> str:
        return f"command line of pid {self.pid}"

    def environ(self, proc: Path = PROC) -> dict[str, str] | Unreadable:
        try:
            data = (proc / str(self.pid) / "environ").read_bytes()
        except OSError as e:
            return Unreadable(f"{proc}/{self.pid}/environ", os_reason(e))
        pairs = (item.partition(b"=") for item in data.split(b"\0") if item)
        return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def read_process(pid: int, proc: Path = PROC) -> Process | Unreadable:
    """The process's arguments (and cwd when readable)."""
    base = proc / str(pid)
    try:
        raw = (base / "cmdline").read_bytes()
        stat = (base / "stat").read_text()
    except OSError as e:
        return Unreadable(f"{base}/cmdline", os_reason(e))
    argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0")[:-1])
    if not argv:
        return Unreadable(f"{base}/cmdline", "empty (a kernel thread or a zombie)")
    try:
        cwd: str | None = os.readlink(base / "cwd")
    except OSError:
        cwd = None
    # the command name in stat may hold spaces and parentheses: ppid follows the last ")"
    ppid = int(stat.rsplit(")", 1)[1].split()[1])
    return Process(pid, ppid, argv, cwd)


def find_masters(is_server: Callable[[tuple[str, ...]], bool],
                 proc: Path = PROC) -> list[Process]:
    """Processes whose argv *is_server* accepts and whose parent it does not (the masters)."""
    found: dict[int, Process] = {}
    for entry in proc.iterdir() if proc.is_dir() else ():
        if entry.name.isdigit():
            p = read_process(int(entry.name), proc)
            if isinstance(p, Process) and is_server(p.argv):
                found[p.pid] = p
    return sorted((p for p in found.values() if p.ppid not in found), key=lambda p: p.pid)
