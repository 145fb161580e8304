"""Numbers for the application server's side (uWSGI, gunicorn) and how to write them.

Options are written as in a uWSGI ini ``[uwsgi]`` section (``buffer-size = 8192``) and in
gunicorn.conf.py (``timeout = 30``): the form people keep in their config files.
"""

from __future__ import annotations

from collections.abc import Mapping

from gw502d.remediate.nginx import power_of_two_at_least

# The uwsgi packet header's size field is 16 bits: nginx's uwsgi module refuses to build a
# bigger request ("uwsgi request is too big"), so a larger buffer-size would never be used.
UWSGI_MAX_PACKET = 65535
# gunicorn's default --timeout; below nginx's default 60 s read timeout, the order the two
# limits must keep (the application ends a stuck request, nginx does not give up first).
BACKEND_TIMEOUT = 30
# Requests a worker serves before it is replaced: bounds what a leak can grow to
RECYCLE_AFTER = 1000
# A listen queue that absorbs bursts; beyond it the fix is more workers, not more waiting.
LISTEN_BACKLOG = 1024


def uwsgi_buffer_size(block_size: int) -> tuple[int, bool]:
    """uWSGI ``buffer-size`` for requests of *block_size* bytes, and whether the protocol's
    64 KiB limit stands in the way of a comfortable one (a quarter more than was seen)."""
    room = block_size + block_size // 4
    return min(power_of_two_at_least(room), UWSGI_MAX_PACKET), room > UWSGI_MAX_PACKET


def listen_backlog(current: int | None, somaxconn: int | None) -> tuple[int, int | None]:
    """uWSGI ``listen`` to use now, and the ``net.core.somaxconn`` to set first if the
    kernel's ceiling is lower than what the queue should be (uWSGI refuses to start with
    a listen above it)."""
    want = max(LISTEN_BACKLOG, 4 * current) if current else LISTEN_BACKLOG
    if somaxconn is None or want <= somaxconn:
        return want, None
    return somaxconn, want


def read_timeout_above(limit: int) -> int:
    """nginx's read timeout for a backend that ends requests after *limit* seconds: far
    enough above it that the backend's limit, not nginx, ends a stuck request."""
    return limit + max(4, limit // 2)


def raised_limit(limit: int) -> int:
    """A request time limit that killed a legitimate request, raised: twice as long, and not
    below gunicorn's default (shorter limits kill ordinary slow pages)."""
    return max(2 * limit, BACKEND_TIMEOUT)


def render(options: Mapping[str, str]) -> str:
    """``buffer-size = 8192, listen = 1024`` (ini keys or gunicorn.conf.py names)."""
    return ", ".join(f"{name} = {value}" for name, value in options.items())
