"""Lines written by real servers, provoked on 127.0.0.1 on every run (facts, not claims).

Each scenario of tests/servers/provoke.py starts nginx, uWSGI, gunicorn or the Werkzeug dev
server (Debian's, the test environment's, or another version from tests/servers/versions.py),
makes it fail the way production does, and returns the log it wrote. The line the scenario
names must classify as its incident, and no other line of that log may count as an incident
except the ones the server really writes along with it (listed below). What the client got
must be what the catalog's ``client_status`` says for that server version.
"""

from __future__ import annotations

import importlib
import re

import pytest

from gw502d.classify.block import Block
from gw502d.classify.catalog import load_catalog
from gw502d.classify.matcher import Classifier
from gw502d.classify.tally import Tally
from tests.servers.harness import free_ports
from tests.servers.provoke import SCENARIOS, Capture, Scenario

CATALOG = load_catalog()
CLASSIFIER = Classifier(CATALOG)

# Incidents a real server logs besides the scenario's own, for the same event (by scenario
# name without its "@version"; the most specific name wins). Those marked "consequence"
# follow their incident with the same worker pid: the catalog's consequence_of says they
# are one event (the tally does not apply it yet).
ALSO = {
    # nginx tries each server of the group (connect refused) before "no live upstreams"
    "nginx-no_live_upstreams": {"upstream_connect_refused"},
    "uwsgi-worker_died.sig11": {"worker_crashed"},  # the segfault line comes first
    "uwsgi-workers_respawning_too_fast": {"worker_died"},  # the deaths it reports
    # the worker refuses the too-big packet the router forwards, then the router's read fails
    "uwsgi-router_upstream_reset": {"request_block_too_big"},
}
# The worker's death ends the event its harakiri, crash or memory kill began (same pid):
# counted with it as a consequence, not as an incident of its own
ENDED = {
    "uwsgi-worker_harakiri": {"worker_died"},
    "uwsgi-worker_died.sig11": {"worker_died"},
    "uwsgi-worker_crashed": {"worker_died"},
    "uwsgi-worker_memory_killed": {"worker_died"},
}
# Modern Werkzeug swallows ConnectionError in its request handler (serving.py,
# WSGIRequestHandler.handle): a client that goes away leaves only the request line. The
# catalog's werkzeug client_disconnect lines are the Python 2 / socketserver forms (claims).
NO_INCIDENT_LINE = {"werkzeug-client_disconnect"}
# Scenarios named for what they run rather than for the incident id.
INCIDENT = {"werkzeug-dev_server": "dev_server_warning"}
# Dev server logs start with its banner, except when it cannot even bind.
NO_BANNER = {"werkzeug-address_in_use"}
_GOT = re.compile(r"got HTTP (\d{3}|None)")


def _lookup(table: dict[str, set[str]], scenario: Scenario) -> set[str]:
    key = f"{scenario.family}-{scenario.scenario}"
    full = f"{key}.{scenario.variant}" if scenario.variant else key
    return table.get(full, table.get(key, set()))


def client_got(capture: Capture) -> int | None | str:
    """The HTTP status the scenario's client got, from its notes ("missing" if none says)."""
    for note in capture.notes:
        m = _GOT.search(note)
        if m:
            return None if m[1] == "None" else int(m[1])
    return "missing"


@pytest.mark.servers
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_real_server_line_classifies(scenario, tmp_path):
    capture = scenario.run(tmp_path)
    key = f"{capture.family}-{capture.scenario}"
    tally = Tally(CLASSIFIER)
    tally.count(Block(key, None, capture.lines, 0.0))
    counted = {incident for (incident, source), n in zip(tally.keys, tally.counts, strict=True)
               if n and source == capture.family}
    for status in statuses_recorded_for(scenario.name):
        assert client_got(capture) == status.status, (status, capture.notes)
    if key in NO_INCIDENT_LINE:
        assert "client_disconnect" not in counted
        return
    incident = INCIDENT.get(key, capture.scenario)
    hit = CLASSIFIER.classify(capture.primary_line)
    assert hit is not None, capture.primary_line
    assert (hit.incident.id, hit.incident.source) == (incident, capture.family)
    ended = _lookup(ENDED, scenario)
    expected = ({incident} | _lookup(ALSO, scenario)) - ended
    assert sum(tally.companions) >= len(ended)  # the ending line is counted, as a companion
    if capture.family == "werkzeug" and key not in NO_BANNER:
        expected.add("dev_server_warning")  # every dev server log starts with its banner
    assert counted == expected, (counted, capture.notes)


def statuses_recorded_for(name: str) -> list:
    """The catalog's client_status entries measured by scenario *name*."""
    return [s for i in CATALOG.incidents for s in i.client_status
            if s.origin.endswith(f"::{name}")]


SCENARIO_NAMES = {s.name: s for s in SCENARIOS}
_REAL = re.compile(r"real: (?:(?P<server>\S+) (?P<version>\S+), )?tests/(?:test_real_servers\.py::"
                   r"(?P<name>\S+)|(?P<module>test_\w+)\.py::(?P<test>test_\w+))$")


def test_real_examples_and_statuses_name_a_scenario_that_provokes_them_again():
    """A `real:` line stays a fact only while a scenario writes it again on every run; an
    extra version's line is kept with that exact version."""
    origins = [ex.origin for i in CATALOG.incidents for ex in i.examples]
    origins += [ex.origin for f in CATALOG.families for ex in f.benign]
    origins += [s.origin for i in CATALOG.incidents for s in i.client_status]
    checked = 0
    for origin in origins:
        if not origin.startswith("real:"):
            continue
        m = _REAL.match(origin)
        assert m, f"a real: origin names its scenario: {origin}"
        if m["module"]:  # written again by a test of its own (syslog, journal)
            module = importlib.import_module(f"tests.{m['module']}")
            assert callable(getattr(module, m["test"], None)), origin
            checked += 1
            continue
        scenario = SCENARIO_NAMES.get(m["name"])
        assert scenario is not None, f"no scenario {m['name']!r} provokes {origin}"
        if m["server"] and scenario.version is not None:
            assert f"{m['server']} {m['version']}" == scenario.version.label, origin
        checked += 1
    assert checked > 50


def test_the_harness_never_hands_out_a_port_twice():
    """Servers pick ports before they bind them (and a dead upstream never binds its own):
    a port the kernel offers again would put two of them on one port. Six hundred picks
    from the ephemeral range would repeat some ports by chance alone."""
    picked = [port for _ in range(200) for port in free_ports(3)]
    assert len(set(picked)) == len(picked)
