"""Run every scenario against real servers and keep the raw logs they wrote.

Usage: python3 -m tests.servers.capture OUTDIR [NAME_SUBSTRING ...]

Writes OUTDIR/<family>-<scenario>[.<variant>][@<version>].log (the relevant log, byte for byte),
OUTDIR/<name>+<other-log> for companion logs (access logs, the backend's log), and
OUTDIR/manifest.json listing, per capture, the incident line numbers (1-based), the
incident lines themselves and notes. Why: fixtures for the classifier come from here.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

from tests.servers.provoke import SCENARIOS, Capture, Unsupported


def _entry(name: str, cap: Capture, seconds: float) -> dict[str, object]:
    return {
        "family": cap.family,
        "scenario": cap.scenario,
        "variant": cap.variant,
        "server": cap.server,
        "file": f"{name}.log",
        "source_log": cap.log_name,
        "incident_lines": [i + 1 for i in cap.incident],
        "incident": [line.decode("utf-8", "replace") for line in cap.incident_lines],
        "primary": (cap.primary_line or b"").decode("utf-8", "replace"),
        "extra": sorted(f"{name}+{other}" for other in cap.extra),
        "notes": cap.notes,
        "seconds": round(seconds, 2),
    }


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    only = argv[1:]
    out.mkdir(parents=True, exist_ok=True)
    manifest: list[dict[str, object]] = []
    failures = 0
    for sc in SCENARIOS:
        if only and not any(o in sc.name for o in only):
            continue
        t0 = time.monotonic()
        try:
            cap = sc.run(None)
        except Unsupported as e:
            print(f"SKIP {sc.name}: {e}", flush=True)
            manifest.append({"file": f"{sc.name}.log", "skipped": str(e)})
            continue
        except Exception as e:
            failures += 1
            print(f"FAIL {sc.name}: {e!r}", flush=True)
            traceback.print_exc()
            manifest.append({"file": f"{sc.name}.log", "error": repr(e)})
            continue
        dt = time.monotonic() - t0
        # the scenario's name, with "@version" for extra server versions
        (out / f"{sc.name}.log").write_bytes(cap.raw)
        for name, data in cap.extra.items():
            (out / f"{sc.name}+{name}").write_bytes(data)
        manifest.append(_entry(sc.name, cap, dt))
        status = "ok  " if cap.incident else "NONE"
        first = (cap.primary_line or b"(no incident line)").decode("utf-8", "replace")
        print(f"{status} {sc.name} ({dt:.1f}s): {first[:160]}", flush=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
