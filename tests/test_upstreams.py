"""Advice and counts per upstream, labelled from this host's nginx configuration only.

The host is the Debian-like tree of :mod:`tests.hostconf_host` (sites-enabled, includes,
upstream blocks, directives inherited from http and server) with a uWSGI ini; the lines
are nginx's own (``real:`` examples of the catalog) with the upstream the scenario needs.
The daemon's pipeline counts them; its totals go through a snapshot and a reload.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from gw502d.classify.block import Block
from gw502d.classify.catalog import load_catalog
from gw502d.classify.events import EVENT_FACTS, Event
from gw502d.classify.tally import Tallies
from gw502d.daemon.pipeline import Pipeline, Settings
from gw502d.daemon.totals import Totals
from gw502d.remediate.advice import Context, advise_upstreams
from gw502d.remediate.configured import Bind, HostConfig
from gw502d.remediate.correlate import Correlator
from gw502d.remediate.host import ConfigPaths
from gw502d.source.spec import LogSpec
from tests.hostconf_host import Host, shop_host

CATALOG = load_catalog()
SPECS = [LogSpec("/x/error.log", "nginx", "nginx")]
SETTINGS = Settings(incidents_buffer=10, redact=True, window=5.0)


def _real(incident: str) -> str:
    return next(ex.line for i in CATALOG.incidents if i.key == (incident, "nginx")
                for ex in i.examples if ex.origin.startswith("real:"))


def line(incident: str, upstream: str) -> bytes:
    """A line nginx wrote for *incident*, with *upstream* in its upstream field."""
    return re.sub(r'upstream: "[^"]*"', f'upstream: "{upstream}"', _real(incident)).encode()


@pytest.fixture
def host() -> Iterator[Host]:
    with shop_host() as h:
        yield h


def read(host: Host) -> HostConfig:
    return HostConfig.read(ConfigPaths(host.conf, uwsgi=(str(host.base / "shop.ini"),)))


def test_labels_come_from_the_config_only(host: Host) -> None:
    conf = read(host)
    api, blog = f"uwsgi://127.0.0.1:{host.ports['api']}", f"http://127.0.0.1:{host.ports['blog']}"
    assert conf.problems == []
    assert conf.label(api) == api and conf.label(blog) == blog
    # proxy_pass's URI and the unix socket's trailing colon are not part of the label
    assert conf.label(blog + "/admin?x=1") == blog
    assert conf.label(f"http://unix:{host.etc}/run/admin.sock:") == \
        f"http://unix:{host.etc}/run/admin.sock"
    # a peer the config does not pass to, another scheme, junk: never a label of its own
    for forged in ("http://10.9.9.9:80", f"http://127.0.0.1:{host.ports['api']}",
                   "uwsgi://evil\"}", "", None):
        assert conf.label(forged) == "other"
    assert len(conf.labels()) == 10  # the peers of the config, and other
    assert HostConfig.read(ConfigPaths(None)).labels() == {"other"}


def test_backend_behind_an_upstream(host: Host) -> None:
    conf = read(host)
    (backend, bind), = conf.backends_for(f"127.0.0.1:{host.ports['api']}")
    assert backend.server == "uwsgi" and bind.host == "*" and bind.protocol == "uwsgi"
    assert conf.backends_for(f"127.0.0.1:{host.ports['blog']}") == []
    assert Bind.parse("unix:/run/g.sock", "http", "x").serves("unix:/run/g.sock")
    assert Bind.parse("localhost:8000", "http", "x", 8000).serves("127.0.0.1:8000")
    assert not Bind.parse("10.0.0.1:8000", "http", "x").serves("127.0.0.1:8000")
    assert Bind.parse("%(socket)", "uwsgi", "x") is None


def tallies(*lines: bytes) -> Tallies:
    t = Tallies(CATALOG, capture=EVENT_FACTS)
    t.count(Block("error.log", "nginx", list(lines), 0.0))
    return t


def test_advice_per_upstream_names_its_own_block(host: Host) -> None:
    """The issue's case: too big headers from the gunicorn upstream got uwsgi_* advice."""
    conf = read(host)
    api, blog = f"uwsgi://127.0.0.1:{host.ports['api']}", f"http://127.0.0.1:{host.ports['blog']}"
    seen = tallies(*[line("upstream_header_too_big", api)] * 5,
                   *[line("upstream_header_too_big", blog)] * 2,
                   line("upstream_header_too_big", "http://10.9.9.9:80"))
    incident = CATALOG.incident("upstream_header_too_big", "nginx")
    by_label = advise_upstreams(incident, Context(conf=conf, tallies=seen))
    assert set(by_label) == {api, blog, "other"}
    assert set(by_label[api].nginx) == {"uwsgi_buffer_size", "uwsgi_buffers"}
    assert set(by_label[blog].nginx) == {"proxy_buffer_size", "proxy_buffers"}
    assert "proxy" not in by_label[api].text and "uwsgi" not in by_label[blog].text
    assert by_label[api].sentences[0] == (
        f"In {host.shop}:13 (location /api/, uwsgi_pass 127.0.0.1:{host.ports['api']}) "
        "uwsgi_buffer_size is 4k (nginx's default); the upstream's response headers did not "
        "fit. Set uwsgi_buffer_size 16k.")
    # an upstream the config does not know: the generic advice, no located change
    assert by_label["other"].changes == () and "10.9.9.9" in by_label["other"].text
    # without the config: one label, the generic advice for the most common upstream
    generic = advise_upstreams(incident, Context(tallies=seen))
    assert set(generic) == {"other"} and generic["other"].changes == ()
    assert "uwsgi_buffer_size 16k; uwsgi_buffers 8 16k;" in generic["other"].text


def test_timeout_numbers_relative_to_the_current_values(host: Host) -> None:
    conf = read(host)
    api = f"uwsgi://127.0.0.1:{host.ports['api']}"
    seen = tallies(line("upstream_timeout", api))
    advice = advise_upstreams(CATALOG.incident("upstream_timeout", "nginx"),
                              Context(conf=conf, tallies=seen))[api]
    assert advice.sentences[1] == (
        f"In {host.shop}:16 (location /api/, uwsgi_pass 127.0.0.1:{host.ports['api']}) "
        f"uwsgi_read_timeout is 3s; harakiri is 6 in {host.base}/shop.ini:7, so nginx gives "
        "up first. Set uwsgi_read_timeout 10s.")
    assert "e.g." not in advice.text
    assert advice.nginx == {"uwsgi_read_timeout": "10s"} and advice.uwsgi == {}


def test_pipeline_counts_per_upstream_through_snapshot_and_reload(host: Host) -> None:
    conf = read(host)
    api, blog = f"uwsgi://127.0.0.1:{host.ports['api']}", f"http://127.0.0.1:{host.ports['blog']}"
    totals = Totals()
    pipeline = Pipeline(CATALOG, SPECS, SETTINGS, totals)
    pipeline.set_host(conf)
    spec = SPECS[0]
    pipeline.feed(spec, spec.path, [line("upstream_header_too_big", api)] * 3
                  + [line("upstream_header_too_big", blog),
                     line("upstream_header_too_big", "http://10.9.9.9:80"),
                     line("upstream_timeout", api)])
    numbers = pipeline.numbers()
    key = ("upstream_header_too_big", "nginx")
    assert {u: n for (i, s, u), n in numbers.upstream_incidents.items()
            if (i, s) == key and n} == {api: 3, blog: 1, "other": 1}
    # every label of the config exists at 0 for every per-upstream incident
    assert numbers.upstream_incidents[("upstream_reset", "nginx", blog)] == 0
    assert "uwsgi_buffer_size" in numbers.upstream_remediation[(*key, api)]
    assert "proxy_buffer_size" in numbers.upstream_remediation[(*key, blog)]
    assert (*key, f"uwsgi://127.0.0.1:{host.ports['root']}") not in numbers.upstream_remediation
    # the old pair-wide remediation stays (the most common upstream's)
    assert "uwsgi_buffer_size" in numbers.remediation[key]

    # a restart: a new pipeline from the snapshot continues the counts and keeps the advice
    saved = pipeline.snapshot()
    restored = Totals()
    restored.restore(saved, CATALOG)
    again = Pipeline(CATALOG, SPECS, SETTINGS, restored)
    again.set_host(conf)
    assert again.numbers().upstream_remediation == numbers.upstream_remediation
    again.feed(spec, spec.path, [line("upstream_header_too_big", blog)])
    again.reload(CATALOG, SPECS, SETTINGS)
    again.feed(spec, spec.path, [line("upstream_header_too_big", blog)])
    after = again.numbers()
    assert after.upstream_incidents[(*key, blog)] == 3
    assert after.upstream_incidents[(*key, api)] == 3
    assert "proxy_buffer_size" in after.upstream_remediation[(*key, blog)]


def test_a_malformed_snapshot_loses_nothing_else(host: Host) -> None:
    totals = Totals()
    totals.restore({"incidents": {"upstream_reset": {"nginx": 2}},
                    "upstream_incidents": {"upstream_reset": {"nginx": {"other": -1, "x": 3},
                                                              "bad": 7},
                                           "no_such_incident": {"nginx": {"other": 5}}},
                    "upstream_facts": "junk"}, CATALOG)
    assert totals.incidents[("upstream_reset", "nginx")] == 2
    assert totals.upstream_incidents == {("upstream_reset", "nginx", "x"): 3}
    assert totals.upstream_facts == {}
    # counted, no facts left: still a remediation (the catalog's), so its alert has one
    numbers = Pipeline(CATALOG, SPECS, SETTINGS, totals).numbers()
    assert numbers.upstream_incidents[("upstream_reset", "nginx", "x")] == 3
    assert numbers.upstream_remediation[("upstream_reset", "nginx", "x")] == \
        CATALOG.incident("upstream_reset", "nginx").remediation.replace(
            "{upstream}", "<upstream>")


def test_each_upstream_gets_its_own_root_cause(host: Host) -> None:
    """harakiri behind the uwsgi upstream, gunicorn's timeout behind the proxy one: the
    premature closes of each are advised on their own cause."""
    conf = read(host)
    api, blog = f"uwsgi://127.0.0.1:{host.ports['api']}", f"http://127.0.0.1:{host.ports['blog']}"
    correlator = Correlator()
    for t, (backend, upstream) in enumerate([(("worker_harakiri", "uwsgi"), api),
                                             (("worker_timeout", "gunicorn"), blog)] * 2):
        correlator.observe(Event(100.0 * t, *backend, {"worker_pid": t}))
        correlator.observe(Event(100.0 * t + 1, "upstream_premature_close", "nginx",
                                 {"upstream": upstream}))
    assert correlator.counts == {("upstream_premature_close", "worker_harakiri"): 2,
                                 ("upstream_premature_close", "gunicorn_worker_timeout"): 2}
    seen = tallies(line("upstream_premature_close", api), line("upstream_premature_close", blog))
    by_label = advise_upstreams(CATALOG.incident("upstream_premature_close", "nginx"),
                                Context(conf=conf, tallies=seen, correlator=correlator))
    assert by_label[api].cause == "worker_harakiri" and "harakiri" in by_label[api].text
    assert by_label[blog].cause == "gunicorn_worker_timeout"
    assert "harakiri" not in by_label[blog].text and "timeout" in by_label[blog].text


def test_a_line_nginx_may_have_cut_is_never_labelled_by_its_upstream(host: Host) -> None:
    """nginx cuts its lines at 2048 bytes: past the request, the upstream field of such a
    line may be the client's text, so it counts as other."""
    api = f"uwsgi://127.0.0.1:{host.ports['api']}"
    short = line("upstream_header_too_big", api)
    long = short.replace(b" HTTP/1.1", b"?" + b"x" * (2046 - len(short)) + b" HTTP/1.1")
    assert len(long) == 2047  # as long as nginx writes them: it may have cut it
    totals = Totals()
    pipeline = Pipeline(CATALOG, SPECS, SETTINGS, totals)
    pipeline.set_host(read(host))
    pipeline.feed(SPECS[0], SPECS[0].path, [long, line("upstream_header_too_big", api)])
    key = ("upstream_header_too_big", "nginx")
    assert {u: n for (i, s, u), n in totals.upstream_incidents.items() if (i, s) == key} == \
        {"other": 1, api: 1}
