"""Where the HTTP server binds: ``HOST:PORT``, ``:PORT`` or ``[IPv6]:PORT``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Listen:
    """Where the HTTP server binds; an empty host means every address (IPv6 and IPv4)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen(value: str) -> Listen:
    """``HOST:PORT``, ``:PORT`` or ``[IPv6]:PORT``; ValueError says what is wrong."""
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. \":9502\" or \"127.0.0.1:9502\")")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{value!r}: put an IPv6 address in brackets, e.g. \"[::1]:9502\"")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: the port must be a number from 1 to 65535")
    return Listen(host, int(port))
