"""The benchmarks' inputs and peer: what bench/genlog.py says a log holds is what gw502d and
the mtail program of bench/peers/mtail count, pair by pair, in every mode.

bench/run.py checks the same at full size; a few thousand lines of each mode here make a
catalog or classifier change that would break the benchmark fail in the test suite first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENLOG = ROOT / "bench" / "genlog.py"
MTAIL_PROGS = ROOT / "bench" / "peers" / "mtail"
MODES = ("mixed", "long", "quiet", "storm", "storm-spread")
LINES = 6000
# The generated times are a UTC host's (nginx and uWSGI write them without a zone)
ENV = {**os.environ, "TZ": "UTC"}


def generate(path: Path, mode: str, n: int) -> dict[str, Any]:
    subprocess.run([sys.executable, str(GENLOG), "--mode", mode, "-n", str(n), "-o", str(path)],
                   check=True, capture_output=True)
    truth: dict[str, Any] = json.loads(Path(f"{path}.truth.json").read_text())
    return truth


def nonzero(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    out = {i: {s: n for s, n in per.items() if n} for i, per in counts.items()}
    return {i: per for i, per in sorted(out.items()) if per}


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    base = tmp_path_factory.mktemp("bench")
    return {m: (base / f"{m}.log", generate(base / f"{m}.log", m, LINES)) for m in MODES}


@pytest.mark.parametrize("mode", MODES)
def test_scan_counts_what_the_generator_wrote(logs: dict[str, tuple[Path, dict[str, Any]]],
                                              mode: str) -> None:
    path, truth = logs[mode]
    out = subprocess.run([sys.executable, "-m", "gw502d", "scan", "--format", "json", str(path)],
                         check=True, capture_output=True, env=ENV, cwd=ROOT).stdout
    result = json.loads(out)
    assert result["lines"] == truth["lines"] == LINES
    assert nonzero(result["counts"]) == truth["counts"]
    if mode.startswith("storm"):  # backend causes sit next to the nginx lines they cause
        assert sum(n for per in result["root_causes"].values() for n in per.values()) > 0


@pytest.mark.parametrize("mode", MODES)
def test_mtail_program_counts_what_the_generator_wrote(
        logs: dict[str, tuple[Path, dict[str, Any]]], mode: str, tmp_path: Path) -> None:
    path, truth = logs[mode]
    # one-shot mtail still listens: a unix socket keeps it off the network
    out = subprocess.run(["mtail", "--one_shot", "--one_shot_format", "json", "--unix_socket",
                          str(tmp_path / "mtail.sock"), "--progs", str(MTAIL_PROGS),
                          "--logs", str(path)],
                         check=True, capture_output=True, env=ENV, timeout=120).stdout
    counts: dict[str, dict[str, int]] = {}
    for family in json.loads(out).get("gw502d_incidents_total", []):
        for point in family.get("LabelValues", []):
            incident, source = point["Labels"]
            counts.setdefault(incident, {})[source] = int(point["Value"]["Value"])
    # a stateless counter counts every line of an incident's shape, the ends of events
    # counted already too (gw502d counts those as companions)
    assert nonzero(counts) == truth["shapes"]


def test_the_stream_is_deterministic_and_a_longer_file_extends_a_shorter_one(
        tmp_path: Path) -> None:
    short = generate(tmp_path / "short.log", "storm", 2000)
    long = generate(tmp_path / "long.log", "storm", 3000)
    again = generate(tmp_path / "again.log", "storm", 2000)
    head = (tmp_path / "long.log").read_bytes().splitlines(keepends=True)[:2000]
    assert (tmp_path / "short.log").read_bytes() == b"".join(head)
    assert (tmp_path / "again.log").read_bytes() == (tmp_path / "short.log").read_bytes()
    assert again == short and long["lines"] == 3000


def test_both_storms_hold_the_same_incidents_at_different_rates(
        logs: dict[str, tuple[Path, dict[str, Any]]]) -> None:
    (_, storm), (_, spread) = logs["storm"], logs["storm-spread"]
    assert storm["incident_lines"] == storm["lines"] and spread["counts"] == storm["counts"]
    assert storm["lines_per_log_second"]["max"] >= 1000
    assert spread["lines_per_log_second"]["max"] < 100 < spread["log_seconds"]
    causes = {"worker_harakiri", "worker_died", "worker_timeout", "worker_killed"}
    assert causes <= set(storm["counts"])


def test_decoys_are_written_and_quiet_has_no_incident(
        logs: dict[str, tuple[Path, dict[str, Any]]]) -> None:
    assert logs["quiet"][1]["counts"] == {}
    assert sum(logs[m][1]["decoy_lines"] for m in ("mixed", "long", "quiet")) > 0
