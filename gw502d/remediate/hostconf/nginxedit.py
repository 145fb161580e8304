"""Set a directive in the location (or server) block that handles an upstream, as a diff.

Where the block itself sets the directive, that statement is replaced (in the file that
holds it: a snippet included in the block is changed for every block including it, and
the sentence says so). Where the value is inherited or nginx's default, the statement is
inserted into the block, after its ``*_pass`` (at the pass's indentation) or at the top
of the block; an override there leaves every other location as it was.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from gw502d.remediate.hostconf import nginxtext
from gw502d.remediate.hostconf.change import Plan, TextEdits
from gw502d.remediate.hostconf.nginxmap import NginxConfig, setting
from gw502d.remediate.hostconf.nginxmodel import Location, Server
from gw502d.remediate.hostconf.nginxread import Statement
from gw502d.remediate.hostconf.result import Where

# A value must stay the arguments of one statement
_UNSAFE = re.compile(r"[;{}#\"'\\\r\n]")
_INDENT = "    "


@dataclass(frozen=True, slots=True)
class NginxEdit:
    """Set *directive* to *value* (its arguments, e.g. ``"8 16k"``) in *block*; with
    *instead_of*, the block's own statement of that directive is the one replaced (e.g.
    ``proxy_pass`` -> ``uwsgi_pass``: two pass directives in a block are an error)."""

    block: Location | Server
    directive: str
    value: str
    instead_of: str | None = None


def plan_nginx(config: NginxConfig, edits: Sequence[NginxEdit]) -> Plan:
    """The diff that makes every edit, or why an edit cannot be made (in ``refused``)."""
    texts = TextEdits()
    sentences: list[str] = []
    refused: list[str] = []
    uses = Counter(s.where for s in config.files.root.walk())
    for edit in edits:
        said = _edit(config, edit, texts, uses)
        (sentences if said[0] else refused).append(said[1])
    return texts.plan(sentences, refused)


def _context(block: Location | Server) -> str:
    if isinstance(block, Server):
        return f"server {block.name or '(no server_name)'}"
    passes = [p for p in block.passes if not p.conditional]
    return block.text + (f", {passes[0].statement}" if passes else "")


def _edit(config: NginxConfig, edit: NginxEdit, texts: TextEdits,
          uses: Counter[Where]) -> tuple[bool, str]:
    block, name, value = edit.block, edit.directive, edit.value.strip()
    context = _context(block)
    if not re.fullmatch(r"[a-z0-9_]+", name) or not value or _UNSAFE.search(value):
        return False, f"{name} {value!r}: not a plain directive and arguments"
    if config.http is None:
        return False, f"{name}: no nginx configuration read"
    statement = f"{name} {value};"
    if edit.instead_of is not None:
        old = block.statement.find(edit.instead_of)
        if len(old) != 1:
            return False, (f"{edit.instead_of} is set {len(old)} times in {context} "
                           f"({block.statement.where}): edit it by hand")
        return _replace(old[0], statement, context, texts, uses[old[0].where])
    own = block.statement.find(name)
    if len(own) > 1:
        return False, (f"{name} is set {len(own)} times in {context} "
                       f"({block.statement.where}): edit it by hand")
    if own:
        return _replace(own[0], statement, context, texts, uses[own[0].where])
    current = setting(block, config.http, name)
    anchor = _anchor(block)
    file = block.statement.where.file
    text = texts.text(file)
    if text is None:
        return False, f"{name}: {file} cannot be read"
    span = nginxtext.find(text, anchor.name, anchor.where.line)
    if span is None:
        return False, f"{file}: {anchor.name} is no longer at line {anchor.where.line}"
    if anchor is block.statement:
        offset = span.end
        indent = (nginxtext.indent_of(text, span.children[0].start) if span.children
                  else nginxtext.indent_of(text, span.start) + _INDENT)
    else:
        offset, indent = span.end, nginxtext.indent_of(text, span.start)
    if nginxtext.rest_is_blank(text, offset):
        texts.add(file, nginxtext.line_bounds(text, offset)[1], 0, f"\n{indent}{statement}")
    else:
        texts.add(file, offset, 0, f" {statement}")
    was = (f"is {current.value}, inherited from {current.level} ({current.where})"
           if current.statements else f"is not set (nginx's default: {current.value})")
    return True, (f"In {block.statement.where} ({context}) {name} {was}: add "
                  f"{statement} after {anchor.name} at {file}:{anchor.where.line}.")


def _replace(old: Statement, statement: str, context: str, texts: TextEdits,
             uses: int) -> tuple[bool, str]:
    file, line = old.where.file, old.where.line
    text = texts.text(file)
    if text is None:
        return False, f"{old.name}: {file} cannot be read"
    span = nginxtext.find(text, old.name, line)
    if span is None:
        return False, f"{file}: {old.name} is no longer at line {line}"
    texts.add(file, span.start, span.end - span.start, statement)
    shared = (f" {file} is included {uses} times: the change applies to each block "
              "including it." if uses > 1 else "")
    return True, (f"In {old.where} ({context}) {old.name} is {' '.join(old.args)}: set "
                  f"{statement}{shared}")


def _anchor(block: Location | Server) -> Statement:
    """The statement to insert after: the location's pass (in the block's own file),
    a server's last listen/server_name, else the block's opening line."""
    own_file = block.statement.where.file
    if isinstance(block, Location):
        candidates = [p.statement for p in block.passes if not p.conditional]
    else:
        candidates = [s for s in block.statement.block or ()
                      if s.name in ("listen", "server_name")]
    same = [s for s in candidates if s.where.file == own_file]
    if isinstance(block, Server):
        same = same[-1:]
    return same[0] if same else block.statement
