"""Named conditions a catalog entry can require with ``when = "..."``.

Some incidents share one message and differ only in what a fact means: uWSGI logs
``invalid request block size: N`` both for a request too big for ``buffer-size`` and for
plain HTTP sent to a uwsgi socket. A predicate holds for a few values of one fact
(``VALUES``, matched by the regex) and adds facts of its own (``PREDICATES``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Facts = Mapping[str, Any]
Predicate = Callable[[Facts], dict[str, Any] | None]

HTTP_METHODS = ("GET", "POST", "PUT", "HEAD", "DELETE", "PATCH", "OPTIONS", "CONNECT",
                "TRACE", "PRI", "PROPFIND", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK")

# uWSGI reads the first 4 bytes of a request as its packet header: modifier1 (1 byte),
# datasize (2 bytes, little-endian), modifier2. For "GET / HTTP/1.1" the datasize is the
# bytes "ET", 0x5445 = 21573. Map every size a method's 2nd and 3rd letters spell.
METHOD_BY_BLOCK_SIZE: dict[int, str] = {}
for _method in reversed(HTTP_METHODS):
    _head = (_method + " ").encode()
    METHOD_BY_BLOCK_SIZE[_head[1] | _head[2] << 8] = _method


def block_size_spells_method(facts: Facts) -> dict[str, Any] | None:
    """The block size is two letters of an HTTP method: plain HTTP hit a uwsgi socket."""
    method = METHOD_BY_BLOCK_SIZE.get(facts.get("block_size", -1))
    return None if method is None else {"method": method}


# A TLS record starts with the content type 0x16 (handshake): the byte uWSGI reads as
# modifier1, so an https client on a uwsgi socket asks for modifier 22.
TLS_HANDSHAKE = 22


def modifier_is_tls(facts: Facts) -> dict[str, Any] | None:
    """The requested modifier1 is a TLS record's first byte: TLS hit a uwsgi socket."""
    return {"protocol": "TLS"} if facts.get("modifier1") == TLS_HANDSHAKE else None


PREDICATES: dict[str, Predicate] = {
    "block_size_spells_method": block_size_spells_method,
    "modifier_is_tls": modifier_is_tls,
}
# The fact each predicate reads and the values it holds for: the classifier compiles them
# into the hot regex (a variant of its own, tried first), so no Python decides per line.
# Every predicate has one.
VALUES: dict[str, tuple[str, frozenset[int]]] = {
    "block_size_spells_method": ("block_size", frozenset(METHOD_BY_BLOCK_SIZE)),
    "modifier_is_tls": ("modifier1", frozenset({TLS_HANDSHAKE})),
}
# The facts each predicate adds, so the catalog can check templates that use them.
PROVIDES: dict[str, tuple[str, ...]] = {
    "block_size_spells_method": ("method",),
    "modifier_is_tls": ("protocol",),
}
