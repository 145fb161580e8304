"""Render a scan: a summary object (json), or text a person can act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gw502d.classify.catalog import Incident
from gw502d.classify.tally import Tally
from gw502d.parse.record import decode
from gw502d.remediate import remediation_for
from gw502d.report.scan import ScanResult

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


def _line_facts(tally: Tally, k: int, line: bytes | None) -> dict[str, Any]:
    slot = tally.evidence_slot[k]
    hit = slot.resolve(line) if slot is not None and line is not None else None
    return hit.facts if hit is not None else {}


def findings(tally: Tally) -> list[Finding]:
    """Incidents with a count, most frequent first."""
    out = []
    for k, n in enumerate(tally.counts):
        if not n:
            continue
        incident = tally.incident(k)
        out.append(Finding(
            incident=incident, count=n,
            first=_line_facts(tally, k, tally.first_line[k]),
            last=_line_facts(tally, k, tally.last_line[k]),
            example=decode(tally.first_line[k] or b""),
            remediation=remediation_for_tally(tally, k),
        ))
    return sorted(out, key=lambda f: -f.count)


def remediation_for_tally(tally: Tally, k: int) -> str:
    """The remediation of incident *k* filled with its most common evidence."""
    evidence = tally.evidence_for(k)
    seen = evidence.facts() if evidence is not None else []
    return remediation_for(tally.incident(k), seen[0][0] if seen else None)


def summary(result: ScanResult) -> dict[str, Any]:
    """The ``--format json`` object."""
    tally = result.tally
    remediation: dict[str, dict[str, str]] = {}
    for k, (incident, source) in enumerate(tally.keys):
        if tally.counts[k]:
            remediation.setdefault(incident, {})[source] = remediation_for_tally(tally, k)
    return {
        "lines": result.lines,
        "files": result.files,
        "errors": result.errors,
        "counts": tally.as_dict(),
        "remediation": remediation,
    }


def text(result: ScanResult) -> str:
    """The ``--format text`` report: one block per incident, then totals."""
    out: list[str] = []
    found = findings(result.tally)
    for f in found:
        i = f.incident
        status = f"HTTP {i.status}" if i.status else "no HTTP status"
        out += [
            f"{i.id} ({i.source}, {i.severity}, {status}): {f.count} line(s)",
            f"  {i.summary}",
            f"  first seen: {f.first.get('time', '?')}   last seen: {f.last.get('time', '?')}",
            f"  example:    {f.example[:EXAMPLE_WIDTH]}",
            f"  fix:        {f.remediation}",
        ]
        if i.docs:
            out.append(f"  docs:       {' '.join(i.docs)}")
        out.append("")
    total = sum(f.count for f in found)
    out.append(f"{result.lines} lines in {len(result.files)} file(s), {total} incident line(s), "
               f"{len(found)} incident type(s)")
    out += [f"error: {e}" for e in result.errors]
    return "\n".join(out) + "\n"
