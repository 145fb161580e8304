"""``gw502d fix``'s reading: the incidents of some logs (or of a running daemon's
``/incidents``) and the advice for each, located in this host's configuration.

A scan gives the facts each incident was seen with and the root causes paired across the
logs; the incident lines also say which server block and URI failed for each upstream
(``routes``), so the advice changes the location nginx chose for those requests, not
every location passing to the same upstream. ``/incidents`` entries carry their lines:
they are written to a scratch directory, one file per log family, oldest first, and
scanned with the rest.
"""

from __future__ import annotations

import json
import tempfile
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from gw502d.classify.catalog import Catalog, Incident
from gw502d.remediate.advice import Advice, Context, advise_seen, advise_upstreams, per_upstream
from gw502d.remediate.configured import HostConfig
from gw502d.remediate.host import host_facts
from gw502d.remediate.nginx import Upstream
from gw502d.scan.engine import Occurrence, ScanResult, scan

# /incidents pages read at most (500 entries each)
MAX_PAGES = 40
_ROUTES_KEPT = 4096  # distinct (upstream, server, uri) remembered from the lines
_TIMEOUT = 30.0


class FetchError(Exception):
    """A daemon's /incidents could not be read (the message says why)."""


@dataclass(frozen=True, slots=True)
class Found:
    """An incident seen in the inputs, with one upstream (None: not per upstream), how
    many lines, and the advice for them."""

    incident: Incident
    upstream: str | None
    lines: int
    advice: Advice


class Routes:
    """The scan's jsonl stage, used for one thing: per upstream, the server and URI its
    failing requests named most (bounded)."""

    def __init__(self) -> None:
        self.seen: Counter[tuple[str, str | None, str | None]] = Counter()

    def add(self, o: Occurrence) -> None:
        facts = o.hit.facts
        upstream = facts.get("upstream")
        if o.hit.incident.source != "nginx" or not isinstance(upstream, str):
            return
        key = (str(Upstream.parse(upstream)), facts.get("server"), facts.get("uri"))
        if key in self.seen or len(self.seen) < _ROUTES_KEPT:
            self.seen[key] += 1

    def top(self) -> dict[str, tuple[str | None, str | None]]:
        out: dict[str, tuple[str | None, str | None]] = {}
        for (upstream, server, uri), _ in self.seen.most_common():
            out.setdefault(upstream, (server, uri))
        return out


def read_incidents(urls: list[str]) -> Iterator[tuple[str, str]]:
    """(source, line) of every entry of each daemon's ``/incidents``, oldest first."""
    for url in urls:
        entries: list[dict[str, Any]] = []
        page: str | None = url
        for _ in range(MAX_PAGES):
            if page is None:
                break
            try:
                with urllib.request.urlopen(page, timeout=_TIMEOUT) as response:
                    body = json.loads(response.read())
            except (urllib.error.URLError, OSError, ValueError) as e:
                raise FetchError(f"{page}: {getattr(e, 'reason', e)}") from e
            if not isinstance(body, dict) or not isinstance(body.get("incidents"), list):
                raise FetchError(f"{page}: not a gw502d /incidents answer")
            entries += [e for e in body["incidents"] if isinstance(e, dict)]
            following = body.get("next")
            page = urljoin(page, following) if isinstance(following, str) else None
        for entry in reversed(entries):
            source, line = entry.get("source"), entry.get("line")
            if isinstance(source, str) and isinstance(line, str):
                yield source, line


@contextmanager
def incident_files(urls: list[str]) -> Iterator[list[str]]:
    """The lines of each daemon's /incidents as files to scan (deleted afterwards)."""
    if not urls:
        yield []
        return
    with tempfile.TemporaryDirectory(prefix="gw502d-fix-") as tmp:
        files: dict[str, list[str]] = {}
        for source, line in read_incidents(urls):
            files.setdefault(source, []).append(line)
        paths = []
        for n, (source, lines) in enumerate(files.items()):
            path = Path(tmp, f"{n}-{''.join(c for c in source if c.isalnum())}.log")
            path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
            paths.append(str(path))
        yield paths


def scan_for_fix(catalog: Catalog, paths: list[str], window: float) -> tuple[ScanResult,
                                                                            Routes]:
    """Scan *paths* and keep the routes of the failing requests."""
    routes = Routes()
    return scan(catalog, paths, on_occurrence=routes.add, window=window), routes


def advise_found(catalog: Catalog, result: ScanResult, routes: Routes,
                 conf: HostConfig | None) -> list[Found]:
    """The advice for every incident seen, per upstream where it depends on one."""
    ctx = Context(host_facts(), result.tallies, result.correlator, conf=conf,
                  routes=routes.top())
    counts, _, _ = result.tallies.totals()
    found: list[Found] = []
    for key, n in sorted(counts.items()):
        if not n:
            continue
        incident = catalog.incident(*key)
        if not per_upstream(incident):
            found.append(Found(incident, None, n, advise_seen(incident, ctx)))
            continue
        lines: Counter[str] = Counter()
        for facts, m in ctx.evidence(*key):
            lines[ctx.label(facts.get("upstream"))] += m
        for label, advice in advise_upstreams(incident, ctx).items():
            found.append(Found(incident, label, lines[label], advice))
    return found
