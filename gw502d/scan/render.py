"""Render a scan: a summary object (json), or text a person can act on.

Text goes to a terminal: control characters from log lines (nginx copies ESC and BEL from
a Referer or a rejected request line verbatim) are shown escaped, never sent raw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gw502d.classify.catalog import Incident
from gw502d.classify.tally import Tally
from gw502d.parse.record import decode
from gw502d.remediate.advice import Context, advise_seen
from gw502d.scan.engine import ScanResult

EXAMPLE_WIDTH = 300


@dataclass(frozen=True, slots=True)
class Finding:
    """One (incident, source) seen by a scan, with what to do about it."""

    incident: Incident
    count: int
    first: dict[str, Any]
    last: dict[str, Any]
    example: str
    remediation: str
    root_causes: dict[str, int]


def _line_facts(tally: Tally, line: bytes | None) -> dict[str, Any]:
    hit = tally.classifier.classify(line) if line is not None else None
    return hit.facts if hit is not None else {}


def findings(result: ScanResult) -> list[Finding]:
    """Incidents with a count, most frequent first."""
    tally = _tally(result)
    causes = result.correlator.by_incident()
    out = []
    for k, n in enumerate(tally.counts):
        if not n:
            continue
        incident = tally.incident(k)
        out.append(Finding(
            incident=incident, count=n,
            first=_line_facts(tally, tally.first_line[k]),
            last=_line_facts(tally, tally.last_line[k]),
            example=decode(tally.first_line[k] or b""),
            remediation=remediation(result, incident),
            root_causes=causes.get(incident.id, {}) if incident.source == "nginx" else {},
        ))
    return sorted(out, key=lambda f: -f.count)


def _tally(result: ScanResult) -> Tally:
    return result.tallies.for_family(None)  # a scan reads every family with one tally


def remediation(result: ScanResult, incident: Incident) -> str:
    """The remediation of *incident* from its evidence, the other logs' and root causes."""
    context = Context(tallies=result.tallies, correlator=result.correlator)
    return advise_seen(incident, context).text


def summary(result: ScanResult) -> dict[str, Any]:
    """The ``--format json`` object."""
    tally = _tally(result)
    texts: dict[str, dict[str, str]] = {}
    for k, (incident, source) in enumerate(tally.keys):
        if tally.counts[k]:
            texts.setdefault(incident, {})[source] = remediation(result, tally.incident(k))
    return {
        "lines": result.lines,
        "files": result.files,
        "errors": result.errors,
        "counts": tally.as_dict(),
        "remediation": texts,
        "root_causes": result.correlator.by_incident(),
    }


def printable(text: str) -> str:
    """*text* with control characters escaped (``\\x1b``), safe for a terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def text(result: ScanResult) -> str:
    """The ``--format text`` report: one block per incident, then totals."""
    out: list[str] = []
    found = findings(result)
    for f in found:
        i = f.incident
        status = f"HTTP {i.status}" if i.status else "no HTTP status"
        out += [
            f"{i.id} ({i.source}, {i.severity}, {status}): {f.count} line(s)",
            f"  {i.summary}",
            f"  first seen: {printable(str(f.first.get('time', '?')))}   "
            f"last seen: {printable(str(f.last.get('time', '?')))}",
            f"  example:    {printable(f.example[:EXAMPLE_WIDTH])}",
        ]
        if f.root_causes:
            causes = ", ".join(f"{c} x{n}" for c, n in
                               sorted(f.root_causes.items(), key=lambda cn: -cn[1]))
            out.append(f"  root cause: {causes} (from the backend's log)")
        out.append(f"  fix:        {printable(f.remediation)}")
        if i.docs:
            out.append(f"  docs:       {' '.join(i.docs)}")
        out.append("")
    total = sum(f.count for f in found)
    out.append(f"{result.lines} lines in {len(result.files)} file(s), {total} incident line(s), "
               f"{len(found)} incident type(s)")
    if result.uncorrelated:
        out.append(f"{result.uncorrelated} event(s) beyond the timeline's cap were not "
                   "correlated")
    out += [f"error: {printable(e)}" for e in result.errors]
    return "\n".join(out) + "\n"
