"""LineSplitter: blocks in, complete lines out, memory bounded by the cap."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gw502d.source.lines import BLOCK_SIZE, LineSplitter


def expected(data: bytes, cap: int) -> tuple[list[bytes], int, bytes]:
    """Reference: (complete lines cut to cap, how many were cut, the unfinished rest)."""
    *lines, rest = data.split(b"\n")
    return [line[:cap] for line in lines], sum(len(line) > cap for line in lines), rest


def feed_all(splitter: LineSplitter, blocks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for block in blocks:
        out += splitter.feed(block)
    return out


def test_lines_partial_tail_and_pending() -> None:
    s = LineSplitter()
    assert s.feed(b"one\ntw") == [b"one"]
    assert s.pending() == 2
    assert s.feed(b"o") == []
    assert s.pending() == 3
    assert s.feed(b"\nthree\n\n") == [b"two", b"three", b""]
    assert s.pending() == 0
    assert s.flush() == []


def test_a_line_cut_while_held_is_counted_when_its_newline_arrives() -> None:
    s = LineSplitter(2)
    assert s.feed(b"abc") == []
    assert s.feed(b"d\nef\n") == [b"ab", b"ef"]
    assert s.long_lines == 1


def test_flush_returns_the_unfinished_line_once() -> None:
    s = LineSplitter()
    s.feed(b"a\nb")
    assert s.flush() == [b"b"]
    assert s.flush() == []
    assert s.pending() == 0


@settings(max_examples=500, deadline=None)
@given(data=st.one_of(st.text(alphabet="ab\n", max_size=300).map(str.encode),
                      st.binary(max_size=600).map(lambda b: b.replace(b"\x00", b"\n"))),
       cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=12),
       cap=st.integers(min_value=1, max_value=40))
def test_any_block_boundaries_give_the_reference_lines(data: bytes, cuts: list[int],
                                                       cap: int) -> None:
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    blocks = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    s = LineSplitter(max_line=cap)
    lines, cut, rest = expected(data, cap)
    assert feed_all(s, blocks) == lines
    assert s.long_lines == cut
    assert s.pending() == len(rest)
    assert s.flush() == ([rest[:cap]] if rest else [])
    assert s.long_lines == cut + (len(rest) > cap)


def test_a_10mb_line_is_cut_once_and_the_next_lines_are_normal() -> None:
    cap = 65536
    s = LineSplitter(cap)
    big = b"x" * (10 << 20)
    data = b"before\n" + big + b"\nafter 1\nafter 2\n"
    blocks = [data[i:i + BLOCK_SIZE] for i in range(0, len(data), BLOCK_SIZE)]
    out = feed_all(s, blocks)
    assert out == [b"before", b"x" * cap, b"after 1", b"after 2"]
    assert s.long_lines == 1


def test_a_long_line_inside_one_block_is_found() -> None:
    # Short lines around one long line, all in a single block bigger than the cap.
    s = LineSplitter(100)
    block = b"a\n" * 50 + b"y" * 250 + b"\n" + b"b\n" * 50
    out = s.feed(block)
    assert out == [b"a"] * 50 + [b"y" * 100] + [b"b"] * 50
    assert s.long_lines == 1


def test_max_line_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        LineSplitter(0)
