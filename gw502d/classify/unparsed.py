"""Lines without the record shape of their log's family: a wrong family or log format.

uWSGI and Werkzeug lines need no prefix, so no line of theirs is unparsed; for nginx and
gunicorn a line that starts with neither the record prefix, nor another form of the family
(request log lines), nor a traceback line is counted here, per log
(``gw502d_unparsed_lines_total``).
"""

from __future__ import annotations

import re

from gw502d.classify.block import Block
from gw502d.classify.catalog import Catalog
from gw502d.parse import FORMATS, compile_template
from gw502d.parse.traceback import CONTINUATION


def shape(catalog: Catalog, family: str | None) -> re.Pattern[bytes] | None:
    """What every line of a log of *family* starts with; None if anything goes."""
    parts = []
    for fam in catalog.families:
        if family is not None and fam.name != family:
            continue
        prefix = fam.prefix.keeping(()).regex
        if re.match(prefix, ""):
            return None
        fmt = FORMATS.get(fam.name)
        forms = fmt.forms.values() if fmt is not None else ()
        parts += [prefix, *(compile_template(f).keeping(()).regex for f in forms)]
    if not parts:
        return None
    return re.compile(b"(?:" + "|".join(parts).encode() + b"|" + CONTINUATION + b")",
                      re.DOTALL)


class UnparsedLines:
    """The unparsed-lines stage: counts per log name, kept across reloads by the caller."""

    def __init__(self, catalog: Catalog, counts: dict[str, int] | None = None) -> None:
        self.catalog = catalog
        self.counts: dict[str, int] = counts if counts is not None else {}
        self._shapes: dict[str | None, re.Pattern[bytes] | None] = {}

    def count(self, block: Block) -> None:
        family = block.family
        if family not in self._shapes:
            self._shapes[family] = shape(self.catalog, family)
        found = self._shapes[family]
        if found is not None:
            n = len(block.lines) - sum(map(bool, map(found.match, block.lines)))
            self.counts[block.log] = self.counts.get(block.log, 0) + n
