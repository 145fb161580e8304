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

import re
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
# The upstream label of a peer nginx's configuration does not pass to (or none was read)
OTHER = "other"
# More buffers than this many bytes each would hold megabytes per connection
_MANY_BUFFERS_UP_TO = 32 * 1024
_TIME_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800,
               "M": 2592000, "y": 31536000}


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


def parse_size(text: str | None) -> int | None:
    """nginx's size notation as bytes: "16k" -> 16384, "1m", "4096"; None if not a size."""
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", (text or "").strip())
    if m is None:
        return None
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


def parse_time(text: str | None) -> float | None:
    """nginx's time notation as seconds: "3s", "60" (seconds), "1m30s", "500ms"."""
    value = (text or "").strip()
    if value.isdigit():
        return float(value)
    parts = re.findall(r"(\d+)(ms|[smhdwMy])", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(int(n) * _TIME_UNITS[u] for n, u in parts)


def time_text(seconds: float) -> str:
    """Seconds in nginx's notation: 10 -> "10s"."""
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{int(seconds * 1000)}ms"


class BufferChange(NamedTuple):
    """One directive to set for a bigger header buffer, and why it must change."""

    directive: str
    value: str
    reason: str


def header_buffer_changes(family: str, new: int, buffers: str | None, busy: str | None,
                          temp: str | None) -> list[BufferChange]:
    """What to set so the header buffer holds *new* bytes and nginx -t still passes, given
    the values in force: *buffers* (``"8 4k"``), and *busy* and *temp* (the
    ``*_busy_buffers_size`` and ``*_temp_file_write_size`` set in the config, None when
    derived). Only what the rules of merge_loc_conf (above) make necessary changes."""
    out = [BufferChange(f"{family}_buffer_size", size_text(new),
                        "the upstream's response headers did not fit")]
    if family == "grpc":
        return out
    count, _, one_text = (buffers or "").partition(" ")
    one = parse_size(one_text)
    if not count.isdigit() or one is None:
        return out
    num, size = int(count), max(new, one)
    busy_value = parse_size(busy) if busy is not None else 2 * size
    if busy_value is not None and busy_value > (num - 1) * one:
        out.append(BufferChange(
            f"{family}_buffers", f"{max(num, 3)} {size_text(max(one, new))}",
            f"{family}_busy_buffers_size ({size_text(busy_value)}) must be less than all "
            f"{family}_buffers minus one ({size_text((num - 1) * one)})"))
        num, one = max(num, 3), max(one, new)
    need = f"it must be at least the larger of {family}_buffer_size and one buffer " \
        f"({size_text(size)})"
    if busy is not None and (busy_value or 0) < size:
        out.append(BufferChange(f"{family}_busy_buffers_size",
                                size_text(min(2 * size, (num - 1) * one)), need))
    if temp is not None and (parse_size(temp) or 0) < size:
        out.append(BufferChange(f"{family}_temp_file_write_size", size_text(2 * size), need))
    return out


def render(directives: Mapping[str, str]) -> str:
    """Directives as paste-ready config: ``uwsgi_buffer_size 16k; uwsgi_buffers 8 16k;``."""
    return " ".join(f"{name} {value};" for name, value in directives.items())
