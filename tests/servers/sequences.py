"""Record multi-line reports of one event, as real servers write them, for the engine's tests.

Usage: python3 -m tests.servers.sequences OUTDIR

Each scenario below provokes exactly one event (one harakiri, one crash, one failed start),
so every line of its log that the catalog classifies belongs to that event: the event must
count once, under `incident`, however many lines report it. Writes
OUTDIR/<scenario>--<server>-<version>.log (and +nginx-error.log where nginx was in front)
and OUTDIR/sequences.json listing, per file, the event's incident and its lines (1-based):
the one counted (`primary`) and the others (companions and consequences).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from gw502d.classify.catalog import load_catalog
from gw502d.classify.matcher import Classifier
from tests.servers.provoke import SCENARIOS, Capture, Scenario

# scenario name (without "@version") -> the incident its one event counts as
EVENTS = {
    "uwsgi-worker_harakiri": "worker_harakiri",
    "uwsgi-worker_crashed.sig11": "worker_crashed",
    "uwsgi-worker_memory_killed": "worker_memory_killed",
    "uwsgi-client_disconnect.nginx": "client_disconnect",
    "uwsgi-client_disconnect.router": "client_disconnect",
    "uwsgi-app_load_failed.dynamic": "app_load_failed",
    "uwsgi-app_load_failed.need_app": "app_load_failed",
    "uwsgi-address_in_use": "address_in_use",
    "gunicorn-worker_timeout": "worker_timeout",
    "gunicorn-worker_killed.self": "worker_killed",
    "gunicorn-worker_boot_failed": "worker_boot_failed",
    "gunicorn-app_load_failed": "app_load_failed",
    "gunicorn-address_in_use": "address_in_use",
    "gunicorn-worker_crashed": "worker_crashed",
    "nginx-address_in_use": "address_in_use",
}


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", label).lower()


def _event(capture: Capture, incident: str) -> dict[str, Any]:
    """The event's lines, by classification; one of them is counted, the others not."""
    classifier = Classifier(load_catalog(), families=[capture.family])
    lines: list[dict[str, Any]] = []
    for n, line in enumerate(capture.lines, 1):
        hit = classifier.classify(line)
        if hit is None:
            continue
        role = ("companion" if hit.incident.companion
                else "primary" if hit.incident.id == incident and not any(
                    r["role"] == "primary" for r in lines)
                else "consequence")
        lines.append({"line": n, "classified_as": hit.incident.id, "role": role})
    primaries = [r for r in lines if r["role"] == "primary"]
    if len(primaries) != 1:
        raise AssertionError(f"{capture.name}: no single {incident} line in {lines}")
    return {"incident": incident, "family": capture.family, "lines": lines}


def record(out: Path) -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    chosen: list[tuple[Scenario, str]] = []
    for sc in SCENARIOS:
        key = sc.name.split("@")[0]
        if key in EVENTS:
            chosen.append((sc, EVENTS[key]))
    for sc, incident in chosen:
        capture = sc.run(None)
        stem = f"{sc.name.split('@')[0]}--{_slug(capture.server)}"
        (out / f"{stem}.log").write_bytes(capture.raw)
        entry = {"file": f"{stem}.log", "server": capture.server, "scenario": sc.name,
                 "event": _event(capture, incident), "notes": capture.notes}
        if "nginx-error.log" in capture.extra:
            (out / f"{stem}+nginx-error.log").write_bytes(capture.extra["nginx-error.log"])
            entry["nginx"] = f"{stem}+nginx-error.log"
        entries.append(entry)
        print(f"{stem}: {len(entry['event']['lines'])} line(s) of one {incident}", flush=True)
    (out / "sequences.json").write_text(json.dumps(entries, indent=2) + "\n")
    return entries


if __name__ == "__main__":
    record(Path(sys.argv[1]))
