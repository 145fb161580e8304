"""Where each statement of an nginx config file starts and ends, in characters.

crossplane gives a statement's first line only; an edit must replace exactly one statement
(which may share its line with others, or span lines) and keep comments and layout. This
scanner follows ngx_conf_read_token: whitespace separates, ``#`` at a token's start runs
to the end of the line, quotes group (a backslash escapes inside them), ``;`` ``{`` ``}``
are tokens of their own, and ``${`` opens a variable name whose ``}`` is not a brace.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    start: int
    end: int
    line: int


@dataclass(slots=True)
class Span:
    """A statement: its tokens, the offset past its ``;`` (or ``{``) and, for a block,
    past its closing ``}``."""

    tokens: list[Token]
    end: int
    block_end: int | None = None
    children: list[Span] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.tokens[0].text

    @property
    def args(self) -> tuple[str, ...]:
        return tuple(t.text for t in self.tokens[1:])

    @property
    def start(self) -> int:
        return self.tokens[0].start

    @property
    def line(self) -> int:
        return self.tokens[0].line


def tokens(text: str) -> Iterator[Token]:
    """nginx tokens with offsets; comments dropped, quoted tokens without their quotes."""
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in ";{}":
            yield Token(c, i, i + 1, line)
            i += 1
        elif c in "\"'":
            j, first = i + 1, line
            while j < n and text[j] != c:
                if text[j] == "\\":
                    j += 1
                elif text[j] == "\n":
                    line += 1
                j += 1
            yield Token(text[i + 1:j], i, min(j + 1, n), first)
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in ";{}":
                if text[j] == "\\":
                    j += 1
                elif text.startswith("${", j):
                    j = text.find("}", j) if "}" in text[j:] else n - 1
                j += 1
            yield Token(text[i:j], i, j, line)
            i = j


def spans(text: str) -> list[Span]:
    """The file's top-level statements, blocks holding their children."""
    root: list[Span] = []
    stack: list[list[Span]] = [root]
    open_blocks: list[Span] = []
    pending: list[Token] = []
    for tok in tokens(text):
        if tok.text == ";" and pending:
            stack[-1].append(Span(pending, tok.end))
            pending = []
        elif tok.text == "{" and pending:
            span = Span(pending, tok.end)
            stack[-1].append(span)
            stack.append(span.children)
            open_blocks.append(span)
            pending = []
        elif tok.text == "}" and open_blocks:
            open_blocks.pop().block_end = tok.end
            stack.pop()
            pending = []
        elif tok.text not in ";{}":
            pending.append(tok)
    return root


def walk(found: list[Span]) -> Iterator[Span]:
    for s in found:
        yield s
        yield from walk(s.children)


def find(text: str, name: str, line: int) -> Span | None:
    """The statement called *name* that starts on *line* (first of them)."""
    return next((s for s in walk(spans(text)) if s.name == name and s.line == line), None)


def line_bounds(text: str, offset: int) -> tuple[int, int]:
    """Start of the line holding *offset*, and the offset of its newline (or the end)."""
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return start, len(text) if end < 0 else end


def indent_of(text: str, offset: int) -> str:
    start, _ = line_bounds(text, offset)
    line = text[start:offset]
    return line[: len(line) - len(line.lstrip())]


def rest_is_blank(text: str, offset: int) -> bool:
    """Nothing but blanks or a comment after *offset* on its line."""
    _, end = line_bounds(text, offset)
    rest = text[offset:end].strip()
    return not rest or rest.startswith("#")
