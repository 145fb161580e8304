"""``/metrics`` as Prometheus' own tools read it: promtool's linter and a real server.

Needs ``promtool`` and ``prometheus`` (apt: prometheus); a missing one fails, never skips.
The Prometheus started here listens on 127.0.0.1 only and is stopped by its PID.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.daemon import (
    DaemonProcess,
    config_text,
    feed_examples,
    free_port,
    log_paths,
    wait_counts,
)

pytestmark = pytest.mark.servers


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install prometheus")
    return path


def test_promtool_check_metrics_is_silent(tmp_path: Path) -> None:
    """promtool lints the Prometheus text format (OpenMetrics: the server test below)."""
    logs = log_paths(tmp_path)
    with DaemonProcess(tmp_path, config_text(logs, start_at="beginning")) as d:
        d.start()
        want, _ = feed_examples(logs)
        wait_counts(d, want)
        status, body, headers = d.get("/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        result = subprocess.run([_tool("promtool"), "check", "metrics"], input=body,
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert (result.stdout + result.stderr).strip() == "", result.stdout + result.stderr
        assert d.stop() == 0


class Prometheus:
    """A Prometheus server scraping one target every second."""

    def __init__(self, workdir: Path, target: str, *, scrape_timeout: str = "1s") -> None:
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            f"global:\n  scrape_interval: 1s\n  scrape_timeout: {scrape_timeout}\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: gw502d\n"
            f"    static_configs:\n      - targets: ['{target}']\n")
        self.output = (workdir / "prometheus.out").open("wb")
        self.proc = subprocess.Popen(
            [_tool("prometheus"), f"--config.file={config}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             f"--storage.tsdb.path={workdir / 'tsdb'}"],
            stdout=self.output, stderr=subprocess.STDOUT)

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": promql}))
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                doc = json.load(response)
        except OSError:
            return []
        assert doc["status"] == "success", doc
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def wait_for(self, promql: str, check: Any, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if check(result):
                return result
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{promql} never held, last result {result}")
            time.sleep(0.5)

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.output.close()


def test_prometheus_scrapes_counts_and_remediation(tmp_path: Path) -> None:
    logs = log_paths(tmp_path)
    with DaemonProcess(tmp_path, config_text(logs, start_at="beginning")) as d:
        d.start()
        want, _ = feed_examples(logs)
        wait_counts(d, want)
        with Prometheus(tmp_path, f"127.0.0.1:{d.port}") as prom:
            prom.wait_for('up{job="gw502d"}', lambda r: r and r[0]["value"][1] == "1")
            key = ("upstream_header_too_big", "nginx")
            selector = f'{{incident="{key[0]}", source="{key[1]}"}}'
            prom.wait_for(f"gw502d_incidents_total{selector}",
                          lambda r: r and float(r[0]["value"][1]) == want[key])
            joined = prom.wait_for(
                f"gw502d_incidents_total{selector} * on(incident, source) "
                "group_left(remediation) gw502d_remediation_info", lambda r: len(r) == 1)
            assert float(joined[0]["value"][1]) == want[key]
            assert "uwsgi://" in joined[0]["metric"]["remediation"]
            # Every pair has its remediation, so the join works for any incident.
            everything = prom.query("gw502d_incidents_total * on(incident, source) "
                                    "group_left(remediation) gw502d_remediation_info")
            assert ({(r["metric"]["incident"], r["metric"]["source"]) for r in everything}
                    >= set(want))
            total = prom.query("sum(gw502d_incidents_total)")
            assert float(total[0]["value"][1]) == sum(want.values())
        assert d.stop() == 0
