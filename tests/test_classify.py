"""Classification on structure: decoys, near misses, and arbitrary bytes never crash."""

from __future__ import annotations

import re
from pathlib import Path
from re import _compiler as sre_compiler  # type: ignore[attr-defined]
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parser  # type: ignore[attr-defined]
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gw502d.classify.block import Block
from gw502d.classify.catalog import load_catalog
from gw502d.classify.matcher import Classifier
from gw502d.classify.predicates import (
    METHOD_BY_BLOCK_SIZE,
    PREDICATES,
    VALUES,
    block_size_spells_method,
)
from gw502d.classify.tally import Tally

CATALOG = load_catalog()
CLASSIFIER = Classifier(CATALOG)
NGX = b"2024/05/01 10:00:00 [error] 812#812: *3 "
MESSAGES = [
    b"upstream sent too big header while reading response header from upstream",
    b"upstream timed out (110: Connection timed out) while reading response header from upstream",
    b"upstream prematurely closed connection while reading response header from upstream",
    b"invalid request block size: 4363 (max 4096)...skip",
    b"*** HARAKIRI ON WORKER 1 (pid: 2, try: 1) ***",
    b"DAMN ! worker 1 (pid: 1) died, killed by signal 9 :( trying respawn ...",
]


def tally_of(*lines: bytes) -> Tally:
    tally = Tally(CLASSIFIER)
    tally.count(Block("app", None, list(lines), 0.0))
    return tally


def incident(line: bytes) -> str | None:
    hit = CLASSIFIER.classify(line)
    return hit.incident.id if hit else None


def test_incident_text_in_client_fields_is_not_an_incident():
    for message in MESSAGES:
        for field in (b"request", b"host", b"referrer"):
            line = (NGX + b'open() "/usr/share/nginx/html/x" failed (2: No such file or '
                    b'directory), client: 10.0.0.1, server: localhost, ' + field + b': "' +
                    message + b'"')
            assert incident(line) is None, line
        # a whole fake nginx record smuggled into the referrer
        fake = NGX + message + b', client: 1.2.3.4, server: x, request: "GET / HTTP/1.1"'
        line = (NGX + b'open() "/x" failed (2: No such file or directory), client: 10.0.0.1, '
                b'server: localhost, request: "GET /x HTTP/1.1", referrer: "' + fake + b'"')
        assert incident(line) is None


def test_upstream_is_read_at_its_position_not_from_the_referrer():
    line = (NGX + b'upstream sent too big header while reading response header from upstream, '
            b'client: 10.0.0.1, server: localhost, request: "GET / HTTP/1.1", '
            b'upstream: "uwsgi://127.0.0.1:3031", host: "x", '
            b'referrer: "http://e/?, upstream: \\"http://6.6.6.6:80\\""')
    hit = CLASSIFIER.classify(line)
    assert hit is not None and hit.facts["upstream"] == "uwsgi://127.0.0.1:3031"
    assert evidence(tally_of(line)) == {"upstream": "uwsgi://127.0.0.1:3031"}


def evidence(tally: Tally, key: tuple[str, str] = ("upstream_header_too_big", "nginx")) -> object:
    found = tally.evidence_for(tally.keys.index(key))
    assert found is not None
    return found.facts()[0][0]


TOO_BIG = NGX + b"upstream sent too big header while reading response header from upstream"


def test_a_second_upstream_field_means_none_is_trusted():
    """nginx before 1.21.1 takes spaces in the request line, and Host and Referer come after
    the upstream field: when a line has two, the client wrote one of them."""
    real = b', upstream: "uwsgi://127.0.0.1:3031"'
    forged = b', upstream: "http://6.6.6.6:1'
    for line in (
        TOO_BIG + b', client: 1.2.3.4, server: x, request: "GET /a HTTP/1.1"' + forged
        + b'"' + real + b', host: "x"',  # in an HTTP/0.9-style request line
        TOO_BIG + b', client: 1.2.3.4, server: x, request: "GET /a HTTP/1.1"' + real
        + b', host: "x' + forged + b'"',  # in the Host header
    ):
        hit = CLASSIFIER.classify(line)
        assert hit is not None and "upstream" not in hit.facts, line
        assert evidence(tally_of(line)) == {}


# what a client can put in the request line, Host or Referer: commas, quotes, spaces and
# pieces of an upstream field
_CLIENT_TEXT = st.lists(st.sampled_from(
    [b",", b" ", b'"', b"a", b"upstream: ", b', upstream: "', b"http://6.6.6.6:1", b":"]),
    max_size=12).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(_CLIENT_TEXT, _CLIENT_TEXT)
def test_the_upstream_look_ahead_is_its_plain_definition(request: bytes, host: bytes):
    """The hot regex's look-ahead (a second upstream field anywhere after the first) against
    the plain rule: the upstream is trusted when the line holds the field once and the
    request line has nginx's shape (a space in the URI: nothing after it is trusted)."""
    real = b', upstream: "uwsgi://127.0.0.1:3031"'
    line = (TOO_BIG + b', client: 1.2.3.4, server: x, request: "GET /' + request
            + b' HTTP/1.1"' + real + b', host: "' + host + b'"')
    hit = CLASSIFIER.classify(line)
    assert hit is not None
    fields = line.count(b', upstream: "')
    first = line.split(b', upstream: "', 1)[1]
    peer = re.match(rb"[a-z0-9+]+://[^\s\"/]*", first)
    expected = peer.group().decode() if fields == 1 and b" " not in request and peer else None
    assert hit.facts.get("upstream") == expected


def test_no_pattern_repeats_a_group_possessively():
    """Debian 12's Python 3.11.2 matches a possessive repeat of a group wrongly when the group
    can backtrack (fixed in 3.11.5, gh-106052): the check above failed there and passed on
    3.11.7. Possessive repeats of single characters or classes are fine and stay."""
    root = Path(__file__).resolve().parent.parent
    group_repeat = re.compile(r"\)(?:\*|\+|\?|\{\d*,?\d*\})\+")
    found = [f"{path.relative_to(root)}:{number}"
             for path in [*root.glob("gw502d/**/*.py"), *root.glob("patterns/**/*.toml")]
             for number, text in enumerate(path.read_text().splitlines(), 1)
             if group_repeat.search(text)]
    assert found == []


def _repeated_groups(parsed: Any) -> list[str]:
    """Repeats (``*``, ``+``, ``?``, ``{m,n}``) of anything wider than one character."""
    found = []
    for op, value in parsed:
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            if not sre_compiler._simple(value[2]):  # noqa: SLF001 - sre's own rule
                found.append(str(value[2])[:80])
            found += _repeated_groups(value[2])
        elif op is sre.SUBPATTERN:
            found += _repeated_groups(value[3])
        elif op is sre.BRANCH:
            for branch in value[1]:
                found += _repeated_groups(branch)
        elif op in (sre.ASSERT, sre.ASSERT_NOT):
            found += _repeated_groups(value[1])
    return found


def test_the_hot_regex_repeats_no_group():
    """Inside a repeated group (an optional one too: ``(?:X)?``), sre copies every capture
    mark set so far at each turn and each branch: with a hundred slots' groups that was a
    third of the cost of a line. Optional parts are ``(?:X|)``, the upstream's look-ahead a
    greedy ``.*``."""
    pattern = Classifier(CATALOG, capture=("upstream", "worker_pid", "signal", "time")).pattern
    assert _repeated_groups(sre_parser.parse(pattern.pattern.decode("latin-1"))) == []


def test_on_a_line_nginx_may_have_cut_the_upstream_is_not_trusted():
    """nginx cuts a record at 2047 bytes: the real upstream field may be gone and one
    forged in the request line left."""
    head = TOO_BIG + b', client: 1.2.3.4, server: x, request: "GET /'
    forged = b' HTTP/1.1", upstream: "http://6.6.6.6:1", host: "'
    line = head + b"a" * 10 + forged
    line += b"z" * (2047 - len(line))
    hit = CLASSIFIER.classify(line)
    assert hit is not None and "upstream" not in hit.facts
    assert evidence(tally_of(line)) == {}
    shorter = line[:-10]
    assert CLASSIFIER.classify(shorter).facts["upstream"] == "http://6.6.6.6:1"  # type: ignore[union-attr]


def test_near_misses_stay_benign():
    for line in [
        b"Thu May  2 10:00:00 2024 - uwsgi_response_write_body_do() TIMEOUT !!!",
        b"[pid: 1|app: 0|req: 1/1] 1.2.3.4 () {34 vars in 512 bytes} [Thu May  2 10:00:00 2024] "
        b"GET / => generated 0 bytes in 1 msecs (HTTP/1.1 502) 2 headers in 64 bytes",
        NGX + b"client closed connection while waiting for request, client: 1.2.3.4, server: x",
        b"upstream sent too big header",  # nginx message without its prefix
        b" " + NGX + MESSAGES[0],         # not at the start of the line
    ]:
        assert incident(line) is None, line


def test_block_size_spelling_a_method_is_a_protocol_mismatch():
    for size, method in METHOD_BY_BLOCK_SIZE.items():
        hit = CLASSIFIER.classify(b"invalid request block size: %d (max 4096)...skip" % size)
        assert hit is not None and hit.incident.id == "protocol_mismatch"
        assert hit.facts["method"] == method
    assert METHOD_BY_BLOCK_SIZE[21573] == "GET"
    too_big = b"invalid request block size: 4363 (max 4096)...skip"
    assert incident(too_big) == "request_block_too_big"


@given(st.integers(min_value=0, max_value=1 << 20), st.integers(min_value=0, max_value=3))
def test_the_regex_decides_the_predicate_as_the_predicate_would(size, zeros):
    """The block sizes compiled into the hot regex are exactly those the predicate holds
    for, whatever digits the number is written with; every predicate has its values."""
    assert VALUES.keys() == PREDICATES.keys()
    line = b"invalid request block size: %s%d (max 4096)...skip" % (b"0" * zeros, size)
    hit = CLASSIFIER.classify(line)
    assert hit is not None
    spelled = block_size_spells_method({"block_size": size})
    assert hit.incident.id == ("protocol_mismatch" if spelled else "request_block_too_big")
    assert tally_of(line).counted(hit.incident.id, "uwsgi") == 1


def test_companion_lines_are_not_counted_as_incidents():
    tally = tally_of(
        b"SIGPIPE: writing to a closed pipe/socket/fd (probably the client disconnected) on "
        b"request /x (ip 1.2.3.4) !!!",
        b"Thu May  2 10:00:00 2024 - uwsgi_response_write_body_do(): Broken pipe "
        b"[core/writer.c line 429] during GET /x (1.2.3.4)",
        b"OSError: write error",
    )
    assert tally.counted("client_disconnect", "uwsgi") == 1
    assert sum(tally.companions) == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_crash_and_are_no_incident(data):
    for line in data.split(b"\n"):
        assert CLASSIFIER.classify(line) is None


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([b"\x00", b"\xff\xfe", b"\x1b[31m"]))
def test_garbage_around_an_incident_message_never_crashes(junk, poison):
    line = NGX + MESSAGES[0] + b", client: " + junk + poison + b", server: " + poison
    hit = CLASSIFIER.classify(line)
    assert hit is not None and hit.incident.id == "upstream_header_too_big"
    assert all(isinstance(v, (str, int)) for v in hit.facts.values())


def test_very_long_line_is_classified_on_its_head():
    line = b"invalid request block size: 4363 (max 4096)...skip" + b" a" * (5 << 20)
    assert incident(line) == "request_block_too_big"


def test_a_line_longer_than_nginx_writes_is_not_nginx():
    """nginx cuts its records at 2047 bytes (NGX_MAX_ERROR_STR): a longer line with its
    prefix was written by something else, and its templates are not even tried."""
    head = NGX + MESSAGES[0] + b', client: 1.2.3.4, server: x, request: "GET /'
    assert incident(head + b"a" * (2047 - len(head))) == "upstream_header_too_big"
    assert incident(head + b"a" * (10 << 20)) is None


HARAKIRI_77 = b"Thu May  2 10:00:00 2024 - *** HARAKIRI ON WORKER 1 (pid: 77, try: 1) ***"
DIED_77 = b"DAMN ! worker 1 (pid: 77) died, killed by signal 9 :( trying respawn ..."


def test_a_death_after_its_harakiri_is_one_event_in_line_order():
    """One harakiri, one count: the worker's death that follows (same pid) is its
    companion; a death with no harakiri before it is an incident of its own."""
    tally = tally_of(DIED_77, HARAKIRI_77, DIED_77, HARAKIRI_77, DIED_77, DIED_77)
    assert tally.counted("worker_harakiri", "uwsgi") == 2
    assert tally.counted("worker_died", "uwsgi") == 2  # the first and the last
    assert tally.companions[tally.companion_keys.index(("worker_harakiri", "uwsgi"))] == 2


def test_a_harakiris_report_lines_wait_for_no_end():
    """uWSGI's report after the kill (typed in the shape Debian's uWSGI 2.0.21 writes) is
    the harakiri's companion lines: they name no worker pid, and only the kill waits for
    the death (the report's lines were remembered under the pid "None" before)."""
    report = [b"Thu May  2 10:00:00 2024 - HARAKIRI !!! worker 1 status !!!",
              b"Thu May  2 10:00:00 2024 - HARAKIRI [core 0] 127.0.0.1 - GET /sleep?s=6 "
              b"since 1714644000",
              b"Thu May  2 10:00:00 2024 - HARAKIRI !!! end of worker 1 status !!!"]
    tally = tally_of(HARAKIRI_77, *report)
    assert tally.companions[tally.companion_keys.index(("worker_harakiri", "uwsgi"))] == 3
    assert tally.pending_ends() == {"worker_harakiri": {"uwsgi": [[1, "77"]]}}


def test_an_event_waiting_for_its_end_survives_a_block_and_a_restart():
    first = tally_of(HARAKIRI_77)
    saved = first.pending_ends()
    assert saved == {"worker_harakiri": {"uwsgi": [[1, "77"]]}}
    later = Tally(CLASSIFIER)
    later.restore_pending_ends(saved)
    later.count(Block("app", None, [DIED_77], 0.0))
    assert later.counted("worker_died", "uwsgi") == 0
