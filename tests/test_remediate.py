"""Remediation: right numbers for the module and the host, accepted by the real servers.

Every nginx snippet gw502d can emit goes through the real ``nginx -t`` (one config, one
location per snippet), every uWSGI option through a real uWSGI start, every gunicorn
setting through ``gunicorn --check-config``; the texts are bounded and never carry what a
client sent.
"""

from __future__ import annotations

import functools
import itertools
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gw502d.classify.block import Block
from gw502d.classify.catalog import Incident, load_catalog
from gw502d.classify.events import Event
from gw502d.classify.matcher import Classifier
from gw502d.classify.tally import Tallies
from gw502d.remediate.advice import MAX_TEXT, Advice, Context, advise
from gw502d.remediate.backend import UWSGI_MAX_PACKET, listen_backlog, uwsgi_buffer_size
from gw502d.remediate.correlate import CAUSE_OF_INCIDENT, CAUSES, Correlator
from gw502d.remediate.host import HostFacts, host_facts
from gw502d.remediate.nginx import FAMILIES, Upstream, header_buffers, render, size_text
from tests.servers.harness import Nginx, Uwsgi, free_port, make_workdir
from tests.servers.provoke import uwsgi_packet

CATALOG = load_catalog()
CLASSIFIER = Classifier(CATALOG)
UPSTREAMS = [
    "uwsgi://127.0.0.1:3031", "uwsgi://unix:/run/uwsgi/app.sock:", "suwsgi://10.0.0.2:3031",
    "http://127.0.0.1:8000", "https://10.0.0.1:443", "http://unix:/run/gunicorn.sock:",
    "fastcgi://127.0.0.1:9000", "scgi://127.0.0.1:4000", "grpc://127.0.0.1:50051",
    "grpcs://10.0.0.3:443", "uwsgi://app_backend", "http://backend",
]
HOSTS = [
    HostFacts(somaxconn=4096, page_size=4096, cpus=2, nginx_user="www-data",
              nginx_group="www-data"),
    HostFacts(somaxconn=128, page_size=65536, cpus=64, nginx_user="nginx", nginx_group="web"),
    HostFacts(somaxconn=None, page_size=16384, cpus=1, nginx_user=None, nginx_group=None),
]
FACT_VARIANTS: list[dict[str, Any]] = [
    *({"upstream": u, "phase": p, "socket": "/run/uwsgi/app.sock"}
      for u in UPSTREAMS for p in ("connect", "send", "read_header", "read_body")),
    *({"block_size": b, "max": 4096} for b in (4097, 5336, 8000, 16000, 30000, 52000, 65535)),
    *({"signal": s} for s in (9, 11, 6)),
    *({"backlog": b} for b in (1, 100, 1024, 4096)),
    {"method": "GET"}, {"method": "POST"}, {},
]


def correlated(cause: str, upstream: str | None) -> Correlator:
    """A correlator that has paired *cause* with a premature close and a timeout."""
    c = Correlator()
    backend = {name: (*key, {}) for key, name in CAUSE_OF_INCIDENT.items()}
    backend["worker_oom_killed"] = ("worker_died", "uwsgi", {"signal": 9})
    facts = {"upstream": upstream} if upstream else {}
    for n, symptom in enumerate(CAUSES[cause].explains):
        c.observe(Event(10.0 * n, *backend[cause]))
        c.observe(Event(10.0 * n + 1, symptom, "nginx", facts))
    return c


@functools.cache
def every_advice(hosts: tuple[HostFacts, ...] = tuple(HOSTS)) -> list[tuple[Incident, Advice]]:
    """What gw502d says for every incident, fact combination, host and root cause."""
    return list(_every_advice(hosts))


def _every_advice(hosts: tuple[HostFacts, ...]) -> Iterator[tuple[Incident, Advice]]:
    contexts = [Context(host) for host in hosts]
    contexts += [Context(host, correlator=correlated(cause, up))
                 for host in hosts for cause in CAUSES for up in (*UPSTREAMS, None)]
    for incident in CATALOG.incidents:
        # the facts a line of this incident can carry: its evidence (what the hot regex
        # captures), so variants that differ elsewhere give the same advice
        variants = {tuple((k, v) for k, v in facts.items() if k in incident.evidence): None
                    for facts in FACT_VARIANTS}
        for context in contexts:
            for facts in variants:
                yield incident, advise(incident, [(dict(facts), 3)], context)


def test_buffer_sets_keep_nginx_rules_for_every_size() -> None:
    for family, size in itertools.product(FAMILIES, range(1, 2 << 20, 997)):
        conf = header_buffers(family, size)
        b = _bytes(conf[f"{family}_buffer_size"])
        assert b >= size
        if family == "grpc":
            assert set(conf) == {"grpc_buffer_size"}
            continue
        count, one = conf[f"{family}_buffers"].split()
        busy = _bytes(conf[f"{family}_busy_buffers_size"])
        assert int(count) >= 2
        assert max(b, _bytes(one)) <= busy <= (int(count) - 1) * _bytes(one), conf


def _bytes(text: str) -> int:
    unit = {"k": 1 << 10, "m": 1 << 20}.get(text[-1], 1)
    return int(text.rstrip("km")) * unit


def test_sizes_in_nginx_notation() -> None:
    assert [size_text(n) for n in (16384, 1 << 20, 3 << 20, 1000)] == ["16k", "1m", "3m", "1000"]


def test_directive_family_follows_the_upstream_scheme() -> None:
    want = {"uwsgi://127.0.0.1:3031": "uwsgi_buffer_size", "http://127.0.0.1:8000":
            "proxy_buffer_size", "fastcgi://127.0.0.1:9000": "fastcgi_buffer_size",
            "grpc://127.0.0.1:50051": "grpc_buffer_size", "scgi://127.0.0.1:4000":
            "scgi_buffer_size"}
    incident = CATALOG.incident("upstream_header_too_big", "nginx")
    for upstream, directive in want.items():
        advice = advise(incident, [({"upstream": upstream}, 1)], Context(HOSTS[0]))
        assert directive in advice.nginx and render(advice.nginx) in advice.text
        assert all(name.startswith(directive.split("_")[0] + "_") for name in advice.nginx)


def test_header_buffer_follows_the_page_size() -> None:
    incident = CATALOG.incident("upstream_header_too_big", "nginx")
    sizes = [advise(incident, [({"upstream": "uwsgi://a:1"}, 1)], Context(h)).nginx[
        "uwsgi_buffer_size"] for h in HOSTS]
    assert sizes == ["16k", "256k", "64k"]


def test_upstream_split_and_pass_directives() -> None:
    unix = Upstream.parse("http://unix:/run/g.sock:")
    assert (unix.family, unix.peer) == ("proxy", "unix:/run/g.sock")
    assert unix.pass_directive("proxy") == ("proxy_pass", "http://unix:/run/g.sock:")
    assert unix.pass_directive("uwsgi") == ("uwsgi_pass", "unix:/run/g.sock")
    assert Upstream.parse("https://10.0.0.1:443").pass_directive("proxy")[1] == \
        "https://10.0.0.1:443"
    assert Upstream.parse("memcached://x").family is None


def test_uwsgi_buffer_size_from_the_largest_block() -> None:
    assert uwsgi_buffer_size(4363) == (8192, False)
    assert uwsgi_buffer_size(7000) == (16384, False)  # 8192 would leave < 25 % room
    assert uwsgi_buffer_size(40000) == (UWSGI_MAX_PACKET, False)
    assert uwsgi_buffer_size(60000) == (UWSGI_MAX_PACKET, True)
    incident = CATALOG.incident("request_block_too_big", "uwsgi")
    seen = [({"block_size": 5000, "max": 4096}, 10), ({"block_size": 9000, "max": 4096}, 1)]
    assert advise(incident, seen).uwsgi == {"buffer-size": "16384"}
    big = advise(incident, [({"block_size": 60000, "max": 32768}, 1)])
    assert big.uwsgi == {"buffer-size": "65535"}
    assert "16 bits" in big.text and "http-socket" in big.text and "proxy_pass" in big.text


def test_listen_is_bounded_by_somaxconn() -> None:
    assert listen_backlog(100, 4096) == (1024, None)
    assert listen_backlog(2048, 4096) == (4096, 8192)
    assert listen_backlog(None, 128) == (128, 1024)
    assert listen_backlog(None, None) == (1024, None)
    incident = CATALOG.incident("listen_queue_full", "uwsgi")
    small = advise(incident, [({"backlog": 100}, 1)], Context(HOSTS[1]))
    assert small.uwsgi == {"listen": "128"}
    assert small.sysctl == {"net.core.somaxconn": "1024"} and "sysctl" in small.text


def test_protocol_mismatch_names_the_side_to_change() -> None:
    incident = CATALOG.incident("protocol_mismatch", "uwsgi")
    alone = advise(incident, [({"method": "POST"}, 1)], Context(HOSTS[0]))
    assert not alone.nginx and "POST" in alone.text and "http-socket" in alone.text
    behind = advise(incident, [({"method": "GET"}, 1)],
                    Context(HOSTS[0], correlator=correlated("protocol_mismatch",
                                                            "http://127.0.0.1:3031")))
    assert behind.nginx == {"include": "uwsgi_params", "uwsgi_pass": "127.0.0.1:3031"}
    assert "proxy_pass" in behind.text and "http-socket = 127.0.0.1:3031" in behind.text


def test_timeouts_keep_the_order_and_name_each_side() -> None:
    close = CATALOG.incident("upstream_premature_close", "nginx")
    facts = [({"upstream": "uwsgi://127.0.0.1:3031", "phase": "read_header"}, 1)]
    harakiri = advise(close, facts, Context(HOSTS[0], correlator=correlated(
        "worker_harakiri", "uwsgi://127.0.0.1:3031")))
    assert harakiri.cause == "worker_harakiri" and "worker_harakiri" in harakiri.text
    # raising nginx's timeout alone would not help: the advice changes harakiri too
    assert int(harakiri.uwsgi["harakiri"]) < int(harakiri.nginx["uwsgi_read_timeout"][:-1])
    timeout = CATALOG.incident("upstream_timeout", "nginx")
    via_http = advise(timeout, [({"upstream": "http://127.0.0.1:8000", "phase": "read_header"},
                                 1)], Context(HOSTS[0]))
    assert set(via_http.nginx) == {"proxy_read_timeout"}
    assert via_http.gunicorn == {"timeout": "30"} and "gunicorn.conf.py" in via_http.text
    connect = advise(timeout, [({"upstream": "uwsgi://a:1", "phase": "connect"}, 1)])
    assert "uwsgi_connect_timeout" in connect.text and not connect.nginx


def test_cause_counts_can_come_from_the_daemon() -> None:
    """The daemon's counts survive restarts: they override the correlator's."""
    close = CATALOG.incident("upstream_reset", "nginx")
    facts = [({"upstream": "uwsgi://127.0.0.1:3031"}, 4)]
    saved = {("upstream_reset", "worker_crashed"): 0, ("upstream_reset", "worker_oom_killed"): 3}
    advice = advise(close, facts, Context(HOSTS[0], correlator=Correlator(), causes=saved))
    assert advice.cause == "worker_oom_killed" and "(3x in the backend log)" in advice.text
    assert advise(close, facts, Context(HOSTS[0], causes=dict.fromkeys(saved, 0))).cause is None


def test_a_worker_death_is_an_oom_kill_or_a_crash() -> None:
    """Deaths after a harakiri are its companions (tests/test_classify.py): a worker_died
    left is SIGKILLed by someone else, most likely the OOM killer, or crashed."""
    died = CATALOG.incident("worker_died", "uwsgi")
    oom = advise(died, [({"signal": 9}, 2)], Context(HOSTS[0]))
    assert oom.cause == "worker_oom_killed" and "OOM" in oom.text
    assert advise(died, [({"signal": 11}, 1)]).cause == "worker_crashed"


def test_socket_permission_names_the_nginx_user_of_this_host() -> None:
    incident = CATALOG.incident("upstream_socket_permission", "nginx")
    facts = [({"socket": "/run/app.sock", "upstream": "uwsgi://unix:/run/app.sock:"}, 1)]
    advice = advise(incident, facts, Context(HOSTS[1]))
    assert advice.uwsgi == {"chmod-socket": "660", "chown-socket": "nginx:web"}
    unknown = advise(incident, facts, Context(HOSTS[2]))
    assert not unknown.uwsgi and "chmod-socket" in unknown.text  # the catalog's text


def test_client_disconnects_point_at_slowness_only_with_timeouts(tmp_path: Path) -> None:
    incident = CATALOG.incident("client_disconnect", "uwsgi")
    tallies = Tallies(CATALOG)
    assert "Benign" in advise(incident, [], Context(HOSTS[0], tallies)).text
    tallies.count(Block("nginx", None, [
        b'2024/05/01 10:00:00 [error] 1#1: *7 upstream timed out (110: Connection '
        b'timed out) while reading response header from upstream, client: 1.2.3.4, '
        b'server: x, request: "GET / HTTP/1.1", upstream: "uwsgi://127.0.0.1:3031", '
        b'host: "x"'], 0.0))
    slow = advise(incident, [], Context(HOSTS[0], tallies))
    assert "too slow" in slow.text and slow.uwsgi["ignore-sigpipe"] == "true"


def test_dev_server_advice_sizes_workers_for_this_host() -> None:
    advice = advise(CATALOG.incident("dev_server_warning", "werkzeug"), [], Context(HOSTS[1]))
    assert advice.gunicorn["workers"] == "129" and "gunicorn -w 129" in advice.text


def test_host_facts_read_from_proc_and_nginx_conf(tmp_path: Path) -> None:
    (tmp_path / "sys/net/core").mkdir(parents=True)
    (tmp_path / "sys/net/core/somaxconn").write_text("512\n")
    conf = tmp_path / "nginx.conf"
    conf.write_text("# user nobody;\nuser  nginx web;\nworker_processes auto;\n")
    facts = HostFacts.read(tmp_path, conf)
    assert (facts.somaxconn, facts.nginx_user, facts.nginx_group) == (512, "nginx", "web")
    conf.write_text("user www-data;\n")
    assert HostFacts.read(tmp_path, conf).nginx_group == "www-data"
    missing = HostFacts.read(tmp_path / "nope", tmp_path / "nope.conf")
    assert (missing.somaxconn, missing.nginx_user) == (None, None)


def test_texts_are_bounded_and_carry_no_client_values() -> None:
    """Every example line, with markers in the fields a client controls."""
    markers = ("EVILURI", "6.6.6.6", "EVILHOST", "EVILREF")
    for incident in CATALOG.incidents:
        for ex in incident.examples:
            line = (ex.line.replace("client: 127.0.0.1", f"client: {markers[1]}")
                    .replace('host: "localhost"', f'host: "{markers[2]}"')
                    .replace('"GET /', f'"GET /{markers[0]}')
                    + f', referrer: "http://{markers[3]}/"')
            line = line.replace("(10.0.0.7)", f"({markers[1]})").replace(
                "/api/v1/export", f"/{markers[0]}")
            hit = CLASSIFIER.classify(line.encode())
            if hit is None:
                continue
            for context in (Context(HOSTS[0]), Context(HOSTS[0], correlator=correlated(
                    "protocol_mismatch", hit.facts.get("upstream")))):
                text = advise(hit.incident, [(hit.facts, 1)], context).text
                assert not any(m in text for m in markers), (ex.line, text)
    long_peer = "uwsgi://" + "a" * 5000
    for incident, advice in every_advice(tuple(HOSTS[:1])):
        assert len(advice.text) <= MAX_TEXT, (incident.id, advice.text)
        assert "\n" not in advice.text
    for incident in CATALOG.incidents:
        text = advise(incident, [({"upstream": long_peer, "socket": "/" + "s" * 5000}, 1)]).text
        assert len(text) <= MAX_TEXT


# --------------------------------------------------------------------------- real servers


def _location(n: int, directives: Mapping[str, str]) -> str:
    passes = {"proxy": "proxy_pass http://127.0.0.1:9;", "uwsgi": "uwsgi_pass 127.0.0.1:9;",
              "fastcgi": "fastcgi_pass 127.0.0.1:9;", "scgi": "scgi_pass 127.0.0.1:9;",
              "grpc": "grpc_pass grpc://127.0.0.1:9;"}
    family = next(iter(directives)).split("_")[0]
    own_pass = any(name.endswith("_pass") for name in directives)
    head = "" if own_pass else passes.get(family, passes["proxy"])
    return f"location = /t{n} {{ {head} {render(directives)} }}"


def _nginx_t(tmp: Path, snippets: list[Mapping[str, str]]) -> tuple[bool, str]:
    shutil.copy("/etc/nginx/uwsgi_params", tmp / "uwsgi_params")
    block = "\n".join(_location(n, d) for n, d in enumerate(snippets))
    # upstream group names from the logs (no_live_upstreams) exist in the user's config
    groups = "".join(f"upstream {name} {{ server 127.0.0.1:9; }}\n"
                     for name in ("backend", "app_backend"))
    return Nginx(tmp, block, http_block=groups).check()


@pytest.mark.servers
def test_real_nginx_accepts_every_snippet(tmp_path: Path) -> None:
    snippets = {render(a.nginx): a.nginx for _, a in every_advice() if a.nginx}
    for family in FAMILIES:
        for size in (*(1 << p for p in range(12, 21)), 5000, 20000, 300_000, 1_000_000):
            conf = header_buffers(family, size)
            snippets[render(conf)] = conf
    assert len(snippets) > 50
    # every family, both ways of passing, every header buffer the advice gives
    names = {name for d in snippets.values() for name in d}
    assert {f"{f}_buffer_size" for f in FAMILIES} <= names
    assert {"uwsgi_pass", "proxy_pass", "include", "uwsgi_read_timeout"} <= names
    ok, err = _nginx_t(tmp_path, list(snippets.values()))
    assert ok, err
    # the check can fail: the blog-post advice does
    ok, err = _nginx_t(tmp_path, [{"uwsgi_buffer_size": "32k"}])
    assert not ok and "uwsgi_busy_buffers_size" in err


def _uwsgi_options(advice: Mapping[str, str], port: int) -> dict[str, object]:
    out: dict[str, object] = {k: True if v == "true" else v for k, v in advice.items()}
    if "http-socket" in out:
        out["http-socket"] = f"127.0.0.1:{port}"  # the advice's 8000 may be taken here
    return out


def _uwsgi_get(path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(uwsgi_packet("/ok"))
        return s.recv(65536)


@pytest.mark.servers
def test_real_uwsgi_starts_with_every_option() -> None:
    # uWSGI checks listen against this host's somaxconn: advice for this host and a
    # smaller one
    here = host_facts()
    small = replace(here, somaxconn=min(here.somaxconn or 128, 128))
    values: dict[str, set[str]] = {}
    for _, advice in every_advice((here, small)):
        for name, value in advice.uwsgi.items():
            values.setdefault(name, set()).add(value)
    assert {"buffer-size", "listen", "harakiri", "chmod-socket", "chown-socket",
            "ignore-sigpipe", "max-requests", "http-socket"} <= set(values)
    assert {"8192", "16384", "32768", "65535"} <= values["buffer-size"]
    runs = [{name: sorted(v)[run % len(v)] for name, v in values.items()}
            for run in range(max(len(v) for v in values.values()))]
    with ThreadPoolExecutor(len(runs)) as pool:  # independent servers: start them together
        for options, (served, log) in zip(runs, pool.map(_start_uwsgi, runs), strict=True):
            assert b"200 OK" in served, options
            assert f"listen backlog is limited to {options['listen']} connections" in log


def _start_uwsgi(options: Mapping[str, str]) -> tuple[bytes, str]:
    """Start uWSGI with *options* on a unix socket; (its answer to a request, its log)."""
    tmp = make_workdir()
    try:
        sock = tmp / "app.sock"
        uw = Uwsgi(tmp, _uwsgi_options(options, free_port()), socket=str(sock))
        with uw:
            served = _uwsgi_get(sock)
        return served, uw.log_path.read_text()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.servers
def test_real_gunicorn_accepts_every_setting(tmp_path: Path) -> None:
    values: dict[str, str] = {}
    for _, advice in every_advice(tuple(HOSTS[:1])):
        values.update(advice.gunicorn)
    assert {"timeout", "max_requests", "max_requests_jitter", "backlog", "umask", "group",
            "workers", "bind"} <= set(values)
    (tmp_path / "wsgi_app.py").write_text(
        "def application(e, s):\n    s('200 OK', [])\n    return [b'ok']\n")
    argv = [f"--{name.replace('_', '-')}={value}" for name, value in values.items()]
    res = subprocess.run([sys.executable, "-m", "gunicorn", "--check-config", *argv,
                          "wsgi_app:application"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([sys.executable, "-m", "gunicorn", "--check-config", "--harakiri=3",
                          "wsgi_app:application"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode != 0  # the check can fail
