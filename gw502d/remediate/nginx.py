"""nginx directives for one upstream: which module's, and sets that ``nginx -t`` accepts.

The ``upstream:`` field of an nginx error line starts with the scheme the location passes
with (ngx_http_*_module sets ``u->schema``): ``uwsgi://`` comes from ``uwsgi_pass``,
``http://`` from ``proxy_pass``. Advice for ``proxy_*`` does nothing in a ``uwsgi_pass``
location, so every directive is named after the module the scheme gives.

Buffer sizes must pass the checks of the module's merge_loc_conf (ngx_http_proxy_module.c;
uwsgi, fastcgi and scgi copy them): at least 2 ``*_buffers``, and ``*_busy_buffers_size``
no smaller than max(``*_buffer_size``, one buffer) and no larger than all buffers minus
one. An unset busy size defaults to twice the buffer size, which is why
``uwsgi_buffer_size 16k;`` alone fails against the default ``uwsgi_buffers 8 4k``. The
temp-file sizes default to values derived from the same numbers and pass with them.
gRPC is not buffered: ``grpc_buffer_size`` is its only buffer directive.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

# nginx's u->schema per module
SCHEME_FAMILY = {
    "http": "proxy", "https": "proxy",
    "uwsgi": "uwsgi", "suwsgi": "uwsgi",
    "fastcgi": "fastcgi",
    "scgi": "scgi",
    "grpc": "grpc", "grpcs": "grpc",
}
FAMILIES = ("proxy", "uwsgi", "fastcgi", "scgi", "grpc")
# nginx's default *_read_timeout; the backend's own limit must stay below it
DEFAULT_READ_TIMEOUT = 60
# More buffers than this many bytes each would hold megabytes per connection
_MANY_BUFFERS_UP_TO = 32 * 1024


class Upstream(NamedTuple):
    """nginx's ``upstream:`` value split: scheme, module family (None: unknown), peer."""

    scheme: str
    family: str | None
    peer: str

    @classmethod
    def parse(cls, upstream: str) -> Upstream:
        """``uwsgi://unix:/run/app.sock:`` -> ("uwsgi", "uwsgi", "unix:/run/app.sock")."""
        scheme, _, peer = upstream.partition("://")
        if peer.startswith("unix:"):
            peer = peer.removesuffix(":")
        return cls(scheme, SCHEME_FAMILY.get(scheme), peer)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.peer}"

    def pass_directive(self, family: str) -> tuple[str, str]:
        """The ``*_pass`` directive and argument that reach this peer with *family*."""
        if family == "proxy":
            scheme = self.scheme if self.family == "proxy" else "http"
            unix_end = ":" if self.peer.startswith("unix:") else ""
            return "proxy_pass", f"{scheme}://{self.peer}{unix_end}"
        if family == "grpc":
            return "grpc_pass", f"grpc://{self.peer}"
        return f"{family}_pass", self.peer


def size_text(n: int) -> str:
    """Bytes in nginx's notation: 16384 -> "16k", 1048576 -> "1m"."""
    if n % (1 << 20) == 0:
        return f"{n >> 20}m"
    if n % 1024 == 0:
        return f"{n >> 10}k"
    return str(n)


def power_of_two_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def header_buffers(family: str, size: int) -> dict[str, str]:
    """Directives whose header buffer holds *size* bytes and that pass ``nginx -t``.

    The body buffers get the same size (8 of them, 4 above 32k); busy is two of them:
    max(buffer_size, one buffer) <= 2 x size <= (buffers - 1) x size.
    """
    b = power_of_two_at_least(max(size, 4096))
    if family == "grpc":
        return {"grpc_buffer_size": size_text(b)}
    count = 8 if b <= _MANY_BUFFERS_UP_TO else 4
    return {
        f"{family}_buffer_size": size_text(b),
        f"{family}_buffers": f"{count} {size_text(b)}",
        f"{family}_busy_buffers_size": size_text(2 * b),
    }


def render(directives: Mapping[str, str]) -> str:
    """Directives as paste-ready config: ``uwsgi_buffer_size 16k; uwsgi_buffers 8 16k;``."""
    return " ".join(f"{name} {value};" for name, value in directives.items())
