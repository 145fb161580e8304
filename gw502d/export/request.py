"""One HTTP/1.x request head, parsed strictly: what the exporter's clients send and no more.

Prometheus, curl and browsers send a request line and a few headers, never a body. Anything
else is refused with a status rather than guessed at: a second Host, a header name with
spaces before its colon or a folded line (the stuff of request smuggling), a body, an
unknown version. The head arrives complete (the server cut it at the blank line, after at
most ``MAX_HEAD`` bytes), so parsing is one pass over a small buffer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

# Prometheus sends about 300 bytes; nginx's default large_client_header_buffers is 4 x 8k.
MAX_HEAD = 16 * 1024
MAX_HEADERS = 64
HEAD_END = re.compile(rb"\r?\n\r?\n")

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REQUEST_LINE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/(\d)\.(\d)")
_UNIQUE = frozenset({"host", "authorization", "content-length"})


class HttpError(Exception):
    """A request that gets an error status and, after it, a closed connection."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request head; header names are lower case, values as sent (latin-1)."""

    method: str
    path: str
    query: str
    version: tuple[int, int]
    headers: Mapping[str, str]

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 only when asked."""
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version >= (1, 1):
            return "close" not in tokens
        return "keep-alive" in tokens


def parse_request(head: bytes) -> Request:
    """The request in *head* (the bytes before the blank line); HttpError if it is not one."""
    text = head.decode("latin-1")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    line = lines[0].removesuffix("\r")
    m = _REQUEST_LINE.fullmatch(line)
    if m is None:
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target = m.group(1), m.group(2)
    version = (int(m.group(3)), int(m.group(4)))
    if version not in ((1, 0), (1, 1)):
        raise HttpError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "HTTP/1.0 or HTTP/1.1 only")
    if not target.startswith("/"):
        raise HttpError(HTTPStatus.BAD_REQUEST, "the target must be a path")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many headers")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        field = raw.removesuffix("\r")
        name, colon, value = field.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpError(HTTPStatus.BAD_REQUEST, "malformed header line")
        name = name.lower()
        value = value.strip(" \t")
        if name in headers:
            if name in _UNIQUE:
                raise HttpError(HTTPStatus.BAD_REQUEST, f"more than one {name} header")
            value = f"{headers[name]}, {value}"
        headers[name] = value
    if version == (1, 1) and "host" not in headers:
        raise HttpError(HTTPStatus.BAD_REQUEST, "HTTP/1.1 needs a Host header")
    if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
        raise HttpError(HTTPStatus.BAD_REQUEST, "no request body expected")
    path, _, query = target.partition("?")
    return Request(method, path, query, version, headers)
