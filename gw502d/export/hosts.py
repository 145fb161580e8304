"""Which ``Host`` headers the exporter answers without basic auth: no DNS rebinding.

A page on attacker.example can have a browser on the monitoring host resolve
attacker.example to 127.0.0.1 and read ``http://attacker.example:9502/incidents`` as its
own origin. The browser still sends ``Host: attacker.example:9502``, and that is what is
checked. Allowed without configuration: IP literals (rebinding needs a DNS name),
``localhost`` and ``*.localhost`` (browsers resolve those themselves), and this machine's
names as its own configuration gives them, without asking DNS: its hostname, short and
long, the hostname in each ``search``/``domain`` of /etc/resolv.conf, and the names in
/etc/hosts (only the admin or DHCP writes those). ``allowed_hosts`` adds names
(``"metrics.example.net"``), domains with their subdomains (``".example.net"``), or ``"*"``
to turn the check off.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from pathlib import Path

ANY = "*"
_HOSTS_FILE = Path("/etc/hosts")
_RESOLV_CONF = Path("/etc/resolv.conf")
_FILE_MAX = 1 << 20
_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]{0,251}[a-z0-9_])?")


def valid_pattern(pattern: str) -> bool:
    """Whether *pattern* can be an ``allowed_hosts`` entry: a name, ``.domain`` or ``*``."""
    return pattern == ANY or _NAME.fullmatch(pattern.lower().removeprefix(".")) is not None


def _read(path: Path) -> list[list[str]]:
    """The words of each line of a config file, comments left out ([] if unreadable)."""
    try:
        with path.open("rb") as f:
            text = f.read(_FILE_MAX).decode("utf-8", "replace")
    except OSError:
        return []
    return [line.partition("#")[0].lower().split() for line in text.splitlines()]


def machine_names(hosts_file: Path = _HOSTS_FILE,
                  resolv_conf: Path = _RESOLV_CONF) -> frozenset[str]:
    """This machine's names: its hostname (short, long, in each search domain) and the
    names in /etc/hosts."""
    hostname = socket.gethostname().lower()
    short = hostname.partition(".")[0]
    names = {hostname, short}
    for words in _read(resolv_conf):
        if words and words[0] in ("search", "domain"):
            names.update(f"{short}.{d.strip('.')}" for d in words[1:])
    for words in _read(hosts_file):
        names.update(w.rstrip(".") for w in words[1:])
    return frozenset(n for n in names if n)


def host_name(header: str) -> str | None:
    """The name or address in a Host header, without port, lower case; None if malformed."""
    value = header.strip().lower()
    if value.startswith("["):
        address, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return None
        return address
    name, colon, port = value.partition(":")
    if colon and not port.isdigit():
        return None
    return name.rstrip(".")


class HostPolicy:
    """Decides whether a request's Host header may be answered."""

    def __init__(self, allowed: Iterable[str] = (), names: Iterable[str] | None = None) -> None:
        self.allowed = tuple(allowed)
        self._any = ANY in self.allowed
        self._names = frozenset(machine_names() if names is None else names) | {
            p.lower().rstrip(".") for p in self.allowed if not p.startswith(".")}
        self._domains = tuple(p.lower().rstrip(".") for p in self.allowed if p.startswith("."))

    def allows(self, header: str | None) -> bool:
        """Whether a request with this Host header (None: none sent) is answered."""
        if self._any or header is None:
            return True  # no Host: HTTP/1.0 from a script; browsers always send one
        name = host_name(header)
        if name is None:
            return False
        try:
            ipaddress.ip_address(name.partition("%")[0])
        except ValueError:
            pass
        else:
            return True
        return (name == "localhost" or name.endswith(".localhost") or name in self._names
                or any(name == d[1:] or name.endswith(d) for d in self._domains))
