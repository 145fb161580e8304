"""Lines written by real servers, provoked on 127.0.0.1 on every run (facts, not claims).

Each scenario of tests/servers/provoke.py starts nginx, uWSGI, gunicorn or the Werkzeug dev
server, makes it fail the way production does, and returns the log it wrote. The line the
scenario names must classify as its incident, and no other line of that log may count as
an incident except the ones the server really writes along with it (listed below).
"""

from __future__ import annotations

import pytest

from gw502d.classify.block import Block
from gw502d.classify.catalog import load_catalog
from gw502d.classify.matcher import Classifier
from gw502d.classify.tally import Tally
from tests.servers.provoke import SCENARIOS

CLASSIFIER = Classifier(load_catalog())

# Incidents a real server logs besides the scenario's own, for the same event.
ALSO = {
    # nginx tries each server of the group (connect refused) before "no live upstreams"
    "nginx-no_live_upstreams": {"upstream_connect_refused"},
    # the harakiri kill ends with the worker's death line (both are counted, as uWSGI logs both)
    "uwsgi-worker_harakiri": {"worker_died"},
}
# Modern Werkzeug swallows ConnectionError in its request handler (serving.py,
# WSGIRequestHandler.handle): a client that goes away leaves only the request line. The
# catalog's werkzeug client_disconnect lines are the Python 2 / socketserver forms (claims).
NO_INCIDENT_LINE = {"werkzeug-client_disconnect"}
# Scenarios named for what they run rather than for the incident id.
INCIDENT = {"werkzeug-dev_server": "dev_server_warning"}


@pytest.mark.servers
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_real_server_line_classifies(scenario, tmp_path):
    capture = scenario.run(tmp_path)
    key = f"{capture.family}-{capture.scenario}"
    tally = Tally(CLASSIFIER)
    tally.count(Block(key, None, capture.lines, 0.0))
    counted = {incident for (incident, source), n in zip(tally.keys, tally.counts, strict=True)
               if n and source == capture.family}
    if key in NO_INCIDENT_LINE:
        assert "client_disconnect" not in counted
        return
    incident = INCIDENT.get(key, capture.scenario)
    hit = CLASSIFIER.classify(capture.primary_line)
    assert hit is not None, capture.primary_line
    assert (hit.incident.id, hit.incident.source) == (incident, capture.family)
    expected = {incident} | ALSO.get(key, set())
    if capture.family == "werkzeug":
        expected.add("dev_server_warning")  # every dev server log starts with its banner
    assert counted == expected, (counted, capture.notes)
