"""Run a process under the limits of deploy/systemd/gw502d.service, enforced by the kernel.

systemd turns ``TasksMax=`` into the pids controller's ``pids.max`` and ``MemoryMax=`` into
the memory controller's limit of the unit's cgroup, and ``LimitNOFILE=`` into
RLIMIT_NOFILE. Without a running systemd (a container, CI) the same three are set here
by hand: a fresh cgroup per controller (cgroup v2, or v1's per-controller hierarchies)
that a small shell joins before it execs the command, through ``prlimit`` (util-linux) for
the open-file limit. Needs root; fails, never skips.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "gw502d.service"
CGROUP = Path("/sys/fs/cgroup")
_SIZE = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


@dataclass(frozen=True)
class UnitLimits:
    """TasksMax, LimitNOFILE (soft, hard) and MemoryMax (bytes) of the unit file."""

    tasks: int
    nofile: tuple[int, int]
    memory: int | None

    @classmethod
    def from_unit(cls, path: Path = UNIT) -> UnitLimits:
        settings: dict[str, str] = {}
        for line in path.read_text().splitlines():
            key, eq, value = line.partition("=")
            if eq and not line.startswith(("#", ";")):
                settings[key.strip()] = value.strip()
        nofile = settings.get("LimitNOFILE", "1024:524288")  # systemd's default
        soft, _, hard = nofile.partition(":")
        memory = settings.get("MemoryMax")
        m = re.fullmatch(r"(\d+)([KMG]?)", memory or "")
        return cls(tasks=int(settings["TasksMax"]), nofile=(int(soft), int(hard or soft)),
                   memory=int(m.group(1)) * _SIZE.get(m.group(2), 1) if m else None)


def _own_cgroup(controller: str) -> str:
    """This process's cgroup path in *controller*'s v1 hierarchy ("" for v2)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path
    return ""


class Confinement:
    """Fresh cgroups with the unit's task and memory limits; a command started through
    :meth:`prefix` runs in them, with the unit's open-file limit."""

    def __init__(self, limits: UnitLimits | None = None) -> None:
        self.limits = limits or UnitLimits.from_unit()
        self.dirs: dict[str, Path] = {}

    def __enter__(self) -> Self:
        name = f"gw502d-test-{os.getpid()}-{time.monotonic_ns()}"
        wanted = {"pids": ("pids.max", str(self.limits.tasks))}
        if self.limits.memory is not None:
            wanted["memory"] = ("memory.limit_in_bytes", str(self.limits.memory))
        try:
            if (CGROUP / "cgroup.controllers").exists():  # cgroup v2
                controllers = (CGROUP / "cgroup.controllers").read_text().split()
                (CGROUP / "cgroup.subtree_control").write_text(
                    " ".join(f"+{c}" for c in wanted if c in controllers))
                group = CGROUP / name
                group.mkdir()
                self.dirs = dict.fromkeys(wanted, group)
                (group / "pids.max").write_text(wanted["pids"][1])
                if "memory" in wanted:
                    (group / "memory.max").write_text(wanted["memory"][1])
            else:  # v1: a hierarchy per controller
                for controller, (knob, value) in wanted.items():
                    group = CGROUP / controller / _own_cgroup(controller).lstrip("/") / name
                    group.mkdir()
                    self.dirs[controller] = group
                    (group / knob).write_text(value)
        except OSError as exc:
            self.__exit__(None, None, None)
            raise RuntimeError(f"cannot create cgroups with the unit's limits ({exc}): "
                               "run the tests as root on a host with the pids and memory "
                               "controllers") from exc
        return self

    def prefix(self) -> tuple[str, ...]:
        """argv to put before a command: it joins the cgroups, then execs the command
        (same PID) with the open-file limit."""
        soft, hard = self.limits.nofile
        # systemd's default hard limit may be above this container's own: keep the soft one
        ceiling = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        hard = min(hard, ceiling) if ceiling != resource.RLIM_INFINITY else hard
        soft = min(soft, hard)
        join = "".join(f'echo $$ > "{g}/cgroup.procs" && ' for g in dict.fromkeys(
            self.dirs.values()))
        return ("sh", "-c", f'{join}exec prlimit --nofile={soft}:{hard} -- "$@"', "sh")

    def tasks_refused(self) -> int:
        """How often a fork or thread was refused for the task limit (pids.events)."""
        events = (self.dirs["pids"] / "pids.events").read_text()
        m = re.search(r"^max (\d+)", events, re.MULTILINE)
        return int(m.group(1)) if m else 0

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for group in dict.fromkeys(self.dirs.values()):
            for _ in range(50):  # the last task may take a moment to leave
                with contextlib.suppress(FileNotFoundError):
                    try:
                        group.rmdir()
                    except OSError:
                        time.sleep(0.1)
                        continue
                break
