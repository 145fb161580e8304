"""The benchmarks' inputs and their truth, shared by run.py, follow.py and scaling.py.

Datasets come from genlog.py, generated once into a data directory and reused (the
generator is deterministic; the file name carries its version, mode, size and seed).
Every child process (gw502d, mtail) runs with ``TZ=UTC``, the zone the generated times are
written in, and with this checkout first on its path, so a clone measures its own code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from genlog import VERSION

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = Path("/tmp/gw502d-bench")
SEED = 502
# Full-size lines of each dataset bench/run.py measures (--quick takes a tenth)
SIZES = {"mixed": 2_000_000, "storm": 500_000, "storm-spread": 500_000, "long": 200_000}
Counts = dict[str, dict[str, int]]


def dataset(data: Path, mode: str, n: int) -> Path:
    """The file of *n* lines of *mode*, generated unless a complete one is there.

    The generator runs in a process of its own: a child's peak RSS, as wait4 reports it,
    starts from the size of the process that started it, so the harness stays small.
    """
    path = data / f"{mode}-{n}-s{SEED}-g{VERSION}.log"
    truth = Path(f"{path}.truth.json")
    if not (path.exists() and truth.exists()
            and path.stat().st_size == json.loads(truth.read_text())["bytes"]):
        print(f"generating {path}", file=sys.stderr)
        data.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(HERE / "genlog.py"), "--mode", mode, "-n", str(n),
                        "--seed", str(SEED), "-o", str(path)], check=True,
                       stderr=subprocess.DEVNULL)
    return path


def truth(path: Path) -> dict[str, Any]:
    """What genlog.py wrote into *path* (lines, bytes, counts, log time)."""
    result: dict[str, Any] = json.loads(Path(f"{path}.truth.json").read_text())
    return result


def nonzero(counts: Counts) -> Counts:
    """``{incident: {source: n}}`` without the zeros (gw502d reports every known pair)."""
    out = {i: {s: n for s, n in per.items() if n} for i, per in counts.items()}
    return {i: per for i, per in sorted(out.items()) if per}


def child_env() -> dict[str, str]:
    """The environment of gw502d and mtail: UTC, and this checkout's gw502d first, with
    its bytecode cached as an installed package's is (``PYTHONDONTWRITEBYTECODE`` would
    compile every module again at each start: 0.2 s of CPU a run)."""
    path = os.environ.get("PYTHONPATH")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "TZ": "UTC",
            "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


def gw502d(*args: str) -> list[str]:
    """The command line of ``gw502d ARGS`` (this interpreter, this checkout)."""
    return [sys.executable, "-m", "gw502d", *args]
