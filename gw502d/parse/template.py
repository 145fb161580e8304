"""Message templates: the small language the catalog uses to describe a log message.

A template is literal text with typed captures and optional parts::

    upstream timed out ({errno:int}: {strerror:text}) while {phase:ngx_phase}
    DAMN ! worker {worker:int} (pid: {worker_pid:int}) died[?, killed by signal {signal:int}] :(

- ``{name:type}`` captures a fact; ``{:type}`` matches without capturing.
- ``[?...]`` is optional; ``\\[``, ``\\]``, ``\\{`` and ``\\}`` are literal brackets where
  they would otherwise start or end a part.

The grammar is pyparsing (it runs once per template, at catalog load); what it produces
is a plain regular expression, so no pyparsing code runs per log line.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyparsing as pp

Converter = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class CaptureType:
    """A capture type: the regex it matches and how its text becomes a fact value."""

    regex: str
    convert: Converter = str


# The capture types every family can use; each family module adds its own (times,
# levels, nginx's phases) and :mod:`gw502d.parse` joins them.
TYPES: dict[str, CaptureType] = {
    # Possessive (*+, ++) where the next literal can never be part of the capture: a
    # failed match then gives up at once instead of backtracking through the line.
    "int": CaptureType(r"\d++", int),
    "ident": CaptureType(r"\w++"),
    "word": CaptureType(r"\S+"),
    # no brackets, parentheses, quotes or commas: addresses, paths, file names
    "token": CaptureType(r"[^\s()\[\]\",]++"),
    # lazy: use it only where a literal follows soon on every line it is tried on
    "text": CaptureType(r".*?"),
    # strerror() text inside "(errno: text)": bounded, so a failed match cannot run on
    "errtext": CaptureType(r"[^()]*+"),
    "rest": CaptureType(r".*"),
    "method": CaptureType(r"[A-Z]++"),
    "nospace": CaptureType(r"[^ ]*+"),
    "quoted": CaptureType(r"[^ \"]*+"),
    # the end of the line: "exited with code 3" must not match "... code 30"
    "end": CaptureType(r"$"),
}


class TemplateError(ValueError):
    """A template that does not parse or names an unknown capture type."""


@dataclass(frozen=True, slots=True)
class Compiled:
    """A template turned into a regex body (no anchors) and its captures in group order."""

    source: str
    regex: str
    captures: tuple[tuple[str, Converter], ...]
    types: Mapping[str, CaptureType] = field(compare=False, repr=False)
    lead: str = ""  # the literal text the template starts with
    tail: str = ""  # the regex after the lead

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.captures)

    def keeping(self, names: Iterable[str], tag: str = "",
                only: Mapping[str, str] | None = None) -> Compiled:
        """The same template capturing only *names*: fewer groups for the hot path.

        With *tag*, groups are named ``{tag}_{name}`` so they can be found in a larger regex;
        *only* narrows captures to a regex of their own (``{name: regex}``).
        """
        return compile_template(self.source, self.types, frozenset(names), tag, only)


def _grammar() -> pp.ParserElement:
    def lit(t: pp.ParseResults) -> tuple[str, str]:
        return ("lit", t[0][1:] if t[0].startswith("\\") else t[0])

    escaped = pp.Regex(r"\\[\[\]{}\\]").set_parse_action(lit)
    # "[" starts an optional part only as "[?"; "]" closes one only inside it.
    literal = pp.Regex(r"[^\[\]{}\\]+|\[(?!\?)").set_parse_action(lit)
    closing = pp.Literal("]").set_parse_action(lit)
    ident = pp.Regex(r"[A-Za-z_][A-Za-z0-9_]*")
    capture = (
        pp.Suppress("{") + pp.Opt(ident, default="") + pp.Suppress(":") + ident + pp.Suppress("}")
    ).set_parse_action(lambda t: ("cap", t[0], t[1]))
    inner = pp.Forward()
    optional = (pp.Suppress("[?") + inner + pp.Suppress("]")).set_parse_action(
        lambda t: ("opt", list(t))
    )
    inner <<= pp.ZeroOrMore(optional | capture | escaped | literal)
    top = pp.ZeroOrMore(optional | capture | escaped | literal | closing) + pp.StringEnd()
    for element in (escaped, literal, closing, ident, capture, optional, inner, top):
        element.leave_whitespace()
    return top


_GRAMMAR = _grammar()


@functools.lru_cache(maxsize=1024)
def _parse(template: str) -> list[Any]:
    """The template's parts (parsed once: a template is compiled several ways)."""
    try:
        parts: list[Any] = _GRAMMAR.parse_string(template, parse_all=True).as_list()
    except pp.ParseBaseException as exc:
        raise TemplateError(f"cannot parse template at column {exc.col}: {exc.msg}") from exc
    return parts


def compile_template(template: str, types: Mapping[str, CaptureType],
                     keep: frozenset[str] | None = None, tag: str = "",
                     only: Mapping[str, str] | None = None) -> Compiled:
    """Compile *template* into a regex body with one group per named capture.

    *types* are the capture types it may use (:data:`gw502d.parse.CAPTURE_TYPES`).
    With *keep*, only those names become groups; the others match without capturing.
    *only* replaces the type's regex of the captures it names.
    """
    parts = _parse(template)
    captures: list[tuple[str, Converter]] = []

    def emit(items: list[Any]) -> str:
        out: list[str] = []
        for kind, *args in items:
            if kind == "lit":
                out.append(re.escape(args[0]))
            elif kind == "opt":
                out.append(f"(?:{emit(args[0])}|)")
            else:
                name, type_name = args
                ctype = types.get(type_name)
                if ctype is None:
                    raise TemplateError(
                        f"unknown capture type {type_name!r} (known: {', '.join(sorted(types))})"
                    )
                regex = (only or {}).get(name, ctype.regex)
                if not name or (keep is not None and name not in keep):
                    out.append(f"(?:{regex})")
                    continue
                if name in (n for n, _ in captures):
                    raise TemplateError(f"capture {name!r} appears twice")
                captures.append((name, ctype.convert))
                out.append(f"(?P<{tag}_{name}>{regex})" if tag else f"({regex})")
        return "".join(out)

    n_lead = next((n for n, part in enumerate(parts) if part[0] != "lit"), len(parts))
    lead = "".join(part[1] for part in parts[:n_lead])
    tail = emit(parts[n_lead:])
    regex = re.escape(lead) + tail
    if not tag:  # checked once per template; tagged variants are built from checked parts
        try:
            re.compile(regex)
        except re.error as exc:  # pragma: no cover - the grammar only emits valid regexes
            raise TemplateError(f"template compiles to an invalid regex: {exc}") from exc
    return Compiled(template, regex, tuple(captures), types, lead, tail)
