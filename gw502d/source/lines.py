"""Raw blocks to complete lines: the one splitter the follower and ``gw502d scan`` share.

The hot path is ``block.split(b"\\n")`` plus carrying the last piece to the next block; no
Python code runs per line. Lines longer than ``max_line`` are rare, so they are looked for
only when a block is longer than the cap, and then with one ``rfind`` per ``max_line``
bytes (about 16 C calls for a 1 MiB block at the default cap), not with a pass over lines.
"""

from __future__ import annotations

BLOCK_SIZE = 1 << 20
# The long-line cap: longer lines are cut to it (configurable: max_line_bytes, --max-line)
MAX_LINE = 65536
MAX_LINE_RANGE = (1024, 16 << 20)


def _has_run_longer_than(block: bytes, cap: int, end: int) -> bool:
    """Whether ``block[:end]`` holds more than ``cap`` bytes without a newline.

    Each step looks at one window of ``cap + 1`` bytes and jumps past its last newline,
    so a block is crossed in about ``len(block) / cap`` steps.
    """
    pos = 0
    while end - pos > cap:
        nl = block.rfind(b"\n", pos, pos + cap + 1)
        if nl < 0:
            return True
        pos = nl + 1
    return False


class LineSplitter:
    """Feeds raw blocks and returns the complete lines (bytes, without ``b"\\n"``).

    The unfinished last line is held until its newline arrives. A line longer than
    ``max_line`` is cut to its first ``max_line`` bytes, returned once when its newline
    arrives and counted in ``long_lines``; the bytes past the cap are dropped as they
    come, so memory stays bounded by ``max_line`` even for a file without newlines.

    >>> s = LineSplitter(max_line=4)
    >>> s.feed(b"ab\\ncdefgh"), s.pending(), s.feed(b"i\\nj"), s.long_lines
    ([b'ab'], 6, [b'cdef'], 1)
    """

    __slots__ = ("_cap", "_held", "_tail", "long_lines")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self._cap = max_line
        self._tail = b""  # head of the unfinished line, at most max_line bytes
        self._held = 0  # length of the unfinished line so far, dropped bytes included
        self.long_lines = 0

    def feed(self, block: bytes) -> list[bytes]:
        """Split ``block``; returns the lines it completes (possibly none)."""
        lines = block.split(b"\n")
        last = lines.pop()
        cap = self._cap
        if not lines:  # no newline: the unfinished line grows
            self._hold(last)
            return lines
        if self._held:
            too_long = self._held + len(lines[0]) > cap
            lines[0] = self._tail + lines[0]
            if too_long:  # the held head is capped already: cut and count it here
                lines[0] = lines[0][:cap]
                self.long_lines += 1
        if len(block) > cap and _has_run_longer_than(block, cap, len(block) - len(last)):
            self._cut(lines)
        self._tail = b""
        self._held = 0
        self._hold(last)
        return lines

    def pending(self) -> int:
        """Bytes of the unfinished line read so far (the saved offset is offset - pending)."""
        return self._held

    def flush(self) -> list[bytes]:
        """End of input: the unfinished line, if any, as a (possibly cut) line."""
        if not self._held:
            return []
        if self._held > self._cap:
            self.long_lines += 1
        line = self._tail
        self._tail = b""
        self._held = 0
        return [line]

    def _hold(self, piece: bytes) -> None:
        if not piece:
            return
        room = self._cap - len(self._tail)
        if room > 0:
            self._tail += piece[:room] if len(piece) > room else piece
        self._held += len(piece)

    def _cut(self, lines: list[bytes]) -> None:
        cap = self._cap
        for i, line in enumerate(lines):
            if len(line) > cap:
                lines[i] = line[:cap]
                self.long_lines += 1
