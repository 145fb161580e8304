"""Lines typed by hand for in-process tests (claims, not facts: the real lines servers
wrote are the catalog's ``real:`` examples and tests/data/real/)."""

from __future__ import annotations

BLOCK = b"invalid request block size: 4363 (max 4096)...skip"
SIGPIPE = (b"SIGPIPE: writing to a closed pipe/socket/fd (probably the client disconnected) "
           b"on request /x (ip 10.0.0.7) !!!")
HARAKIRI = b"Thu May  2 10:00:00 2024 - *** HARAKIRI ON WORKER 1 (pid: 77, try: 1) ***"
NGINX_CLOSE = (b'2024/05/02 10:00:01 [error] 9#9: *1 upstream prematurely closed connection '
               b'while reading response header from upstream, client: 10.0.0.1, server: x, '
               b'request: "GET /slow HTTP/1.1", upstream: "uwsgi://127.0.0.1:3031", host: "x"')


def timeout_line(upstream: str, client: str = "10.0.0.1") -> bytes:
    """nginx's 504 line for *upstream*, with a query string and a client to redact."""
    return (f"2024/05/01 10:00:00 [error] 812#812: *7 upstream timed out (110: Connection timed "
            f"out) while reading response header from upstream, client: {client}, server: "
            f'localhost, request: "GET /slow?id=1 HTTP/1.1", upstream: "{upstream}/slow", '
            'host: "localhost"').encode()
