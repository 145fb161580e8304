"""Facts about this host that change what the right fix is, read once.

The same log line needs different numbers on different machines: nginx's default
``*_buffer_size`` is one memory page, uWSGI refuses a ``listen`` above
``net.core.somaxconn``, gunicorn's worker count follows the CPUs, and a unix socket must
be usable by the user nginx's workers run as.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_NGINX_CONF = "/etc/nginx/nginx.conf"
# ``user www-data;`` / ``user nginx nginx;`` at the top level of nginx.conf
_NGINX_USER = re.compile(r"^\s*user\s+([^\s;]+)(?:\s+([^\s;]+))?\s*;", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What the advice depends on. ``None`` means unknown here (e.g. in a container).

    >>> HostFacts(somaxconn=128, page_size=4096, cpus=2, nginx_user="www-data",
    ...           nginx_group="www-data").gunicorn_workers
    5
    """

    somaxconn: int | None
    page_size: int
    cpus: int
    nginx_user: str | None
    nginx_group: str | None

    @property
    def gunicorn_workers(self) -> int:
        """gunicorn's own rule of thumb: (2 x cores) + 1."""
        return 2 * self.cpus + 1

    @classmethod
    def read(cls, proc: Path = Path("/proc"),
             nginx_conf: Path = Path(DEFAULT_NGINX_CONF)) -> HostFacts:
        """Read the facts from *proc* and *nginx_conf*; what cannot be read stays None."""
        user, group = _nginx_user(nginx_conf)
        return cls(
            somaxconn=_read_int(proc / "sys/net/core/somaxconn"),
            page_size=os.sysconf("SC_PAGESIZE"),
            cpus=os.cpu_count() or 1,
            nginx_user=user,
            nginx_group=group,
        )


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _nginx_user(conf: Path) -> tuple[str | None, str | None]:
    """nginx's worker user and group (``user www-data;`` alone means group www-data too)."""
    try:
        text = conf.read_text(errors="replace")
    except OSError:
        return None, None
    m = _NGINX_USER.search(text)
    if m is None:
        return None, None
    return m.group(1), m.group(2) or m.group(1)


@functools.cache
def host_facts() -> HostFacts:
    """This host's facts, read on first use and kept (they change with a reboot at most)."""
    return HostFacts.read()


@dataclass(frozen=True, slots=True)
class ConfigPaths:
    """Where this host's servers keep their configuration (gw502d.toml's ``[servers]``,
    ``gw502d fix``'s flags): nginx.conf (None: not read), uWSGI files or globs
    (``file.ini:section`` for another section), gunicorn.conf.py files, gunicorn command
    lines (their ``-c`` file is read too; relative paths from *cwd*). Read by
    :class:`gw502d.remediate.configured.HostConfig`."""

    nginx: str | None = DEFAULT_NGINX_CONF
    uwsgi: tuple[str, ...] = ()
    gunicorn: tuple[str, ...] = ()
    gunicorn_commands: tuple[str, ...] = ()
    cwd: str = "/"
    nginx_dump: bool = False  # nginx -T first (root on Debian), else the files
