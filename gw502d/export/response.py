"""A response as the exporter sends it, with the headers every answer carries.

Every answer forbids framing and sniffing and carries a Content-Security-Policy that
allows nothing by default. An HTML answer gets a fresh nonce: its ``<style>`` and
``<script>`` elements run only when they carry it (inline SVG needs nothing more), so text
from a log line that slips into the markup cannot run; such a script may fetch from this
server only (the page refreshes itself so). ``Server`` names no version.
"""

from __future__ import annotations

import gzip
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus

TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
SERVER = "gw502d"
_CSP = "default-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
_ALWAYS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
_GZIP_MIN = 1024


def new_nonce() -> str:
    """A CSP nonce: 128 random bits, URL-safe base64 (fits ``'nonce-...'`` and an attribute)."""
    return secrets.token_urlsafe(16)


@dataclass(slots=True)
class Response:
    """Status, body and the headers particular to this answer.

    ``nonce``: the nonce the HTML body's styles and scripts carry (added to the CSP).
    ``close``: close the connection after this answer (errors in the request itself).
    ``on_sent``: called once when the answer has left (or the connection is gone): what it
    holds (a slot, memory) can be given back.
    """

    status: HTTPStatus
    body: bytes = b""
    content_type: str = TEXT
    headers: dict[str, str] = field(default_factory=dict)
    nonce: str | None = None
    close: bool = False
    on_sent: Callable[[], None] | None = None


def text(status: HTTPStatus, message: str, **headers: str) -> Response:
    """A short plain-text answer (errors, health)."""
    return Response(status, f"{message}\n".encode(), headers=dict(headers))


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header accepts gzip (``gzip;q=0`` refuses it)."""
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.partition(";")
        if coding.strip() in ("gzip", "x-gzip"):
            name, _, value = params.partition("=")
            return name.strip() != "q" or value.strip() not in ("0", "0.0", "0.00", "0.000")
    return False


def compress(response: Response, accept_encoding: str) -> Response:
    """Gzip the body when the client takes it and it is worth it (costly: not in the loop)."""
    response.headers["Vary"] = "Accept-Encoding"
    if len(response.body) >= _GZIP_MIN and accepts_gzip(accept_encoding):
        response.body = gzip.compress(response.body, compresslevel=5)
        response.headers["Content-Encoding"] = "gzip"
    return response


def encode(response: Response, *, head: bool, keep_alive: bool) -> bytes:
    """The bytes on the wire; a HEAD answer has the GET headers and no body."""
    status = response.status
    csp = _CSP
    if response.nonce is not None:
        csp += (f"; style-src 'nonce-{response.nonce}'; script-src 'nonce-{response.nonce}'"
                "; connect-src 'self'")
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Server: {SERVER}",
        f"Date: {formatdate(usegmt=True)}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        f"Content-Security-Policy: {csp}",
        *(f"{name}: {value}" for name, value in _ALWAYS),
        *(f"{name}: {value}" for name, value in response.headers.items()),
    ]
    if not keep_alive:
        lines.append("Connection: close")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return data if head else data + response.body
