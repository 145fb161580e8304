"""``/incidents``: bounded pages, ids to page by, filters, an escaped HTML view (issue 12,
item 5).

The daemon follows a uWSGI log filled with the largest lines the buffer keeps (URIs of
control characters, which JSON spells in six bytes each); pages must stay near 1 MiB and
the daemon's peak memory flat while several clients read at once.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import threading
from pathlib import Path
from typing import Any

from gw502d.classify.catalog import load_catalog
from gw502d.classify.matcher import Classifier
from gw502d.export.incidents import IncidentQuery, RecentIncidents, Seen
from tests.daemon import DaemonProcess, config_text

# claim: uWSGI's write error (core/writer.c) and block-size line, typed here
BIG = ("uwsgi_response_write_body_do(): Broken pipe [core/writer.c line 429] during GET /"
       + "\x01" * 7800 + "{n} (10.0.0.7)")
BLOCK = "invalid request block size: 4363 (max 4096)...skip"
SCRIPT = ("uwsgi_response_write_body_do(): Broken pipe [core/writer.c line 429] during GET "
          "/<script>alert(1)</script> (10.0.0.7)")
ENTRIES = 400


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_incidents_are_paged_filtered_and_bounded(tmp_path: Path) -> None:
    log = tmp_path / "uwsgi.log"
    lines = [BIG.format(n=n) if n % 4 else BLOCK for n in range(ENTRIES - 1)] + [SCRIPT]
    log.write_text("\n".join(lines) + "\n")
    config = config_text({"uwsgi": log}, start_at="beginning", incidents_buffer=ENTRIES)
    with DaemonProcess(tmp_path, config) as d:
        d.start()
        def counted() -> float:
            return sum(v for (name, _), v in d.metrics().items()
                       if name == "gw502d_incidents_total")

        d.wait_for(lambda: counted() == ENTRIES, "every line")
        base_rss = peak_rss_mb(d.pid)

        # Several readers at once: pages of about 1 MiB, a few at a time, memory flat.
        results: list[tuple[int, int]] = []

        def read() -> None:
            status, body, _ = d.get("/incidents?limit=500")
            results.append((status, len(body.encode())))

        readers = [threading.Thread(target=read) for _ in range(8)]
        for t in readers:
            t.start()
        for t in readers:
            t.join(60)
        assert {s for s, _ in results} <= {200, 503} and any(s == 200 for s, _ in results)
        assert max(size for _, size in results) < 1.1 * (1 << 20), results
        assert peak_rss_mb(d.pid) - base_rss < 60, (base_rss, peak_rss_mb(d.pid))

        # Paging: every line once, newest first, while more arrive in between. Pages end
        # at the limit or at about 1 MiB, whichever comes first.
        seen: list[dict[str, Any]] = []
        url: str | None = "/incidents?limit=37"
        while url is not None:
            status, body, headers = d.get(url)
            assert status == 200 and headers["Content-Type"] == "application/json", body
            page = json.loads(body)
            assert 0 < len(page["incidents"]) <= 37 and len(body.encode()) < 1.1 * (1 << 20)
            if not seen:
                with log.open("a") as f:
                    f.write(BLOCK + "\n")
                d.wait_for(lambda: counted() == ENTRIES + 1, "one more line")
            seen += page["incidents"]
            url = page["next"]
        # The line written after the first page pushed the oldest (id 1) out of the buffer.
        assert [e["id"] for e in seen] == list(range(ENTRIES, 1, -1))
        assert seen[0]["line"].endswith("GET /<script>alert(1)</script> (<redacted>)")

        # Filters.
        _, body, _ = d.get("/incidents?incident=request_block_too_big&source=uwsgi&limit=500")
        blocks = json.loads(body)["incidents"]
        assert blocks and {e["incident"] for e in blocks} == {"request_block_too_big"}
        assert json.loads(d.get("/incidents?incident=nothing_like_this")[1]) == {
            "incidents": [], "next": None}
        for bad in ("limit=0", "limit=abc", "limit=100000", "before=-1", "x=1",
                    "incident=%3Cx%3E", "format=xml", "limit=1&limit=2"):
            status, body, _ = d.get(f"/incidents?{bad}")
            assert status == 400 and body[-1] == "\n" and len(body.splitlines()) == 1, (bad, body)

        # HTML, for a person (the on-call page links here): every value escaped, the style
        # carries the nonce of this response's CSP.
        status, page_html, headers = d.get("/incidents?incident=client_disconnect",
                                           headers={"Accept": "text/html"})
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert "<script>" not in page_html and "&lt;script&gt;" in page_html
        nonce = re.search(r"'nonce-([^']+)'", headers["Content-Security-Policy"])
        assert nonce and f'<style nonce="{nonce.group(1)}">' in page_html
        older = re.search(r'<a href="([^"]+)">older</a>', page_html)
        assert older and "format=html" in html.unescape(older.group(1))
        assert d.get("/incidents?format=html")[2]["Content-Type"].startswith("text/html")
        assert d.stop() == 0


def test_ids_stay_with_their_lines() -> None:
    catalog = load_catalog()
    classifier = Classifier(catalog, ["uwsgi"])
    m = classifier.match(BLOCK.encode())
    assert m is not None and m.lastindex is not None
    slot = classifier.slots[m.lastindex]
    recent = RecentIncidents(5)
    for n in range(3):
        recent.add(Seen(slot, BLOCK.encode(), float(n), "uwsgi"))
    first = [n for n, _ in recent.numbered()]
    assert first == [1, 2, 3]
    recent.add(Seen(slot, BLOCK.encode(), 3.0, "uwsgi"))
    assert [n for n, _ in recent.numbered()] == [1, 2, 3, 4]
    for n in range(12):  # more than the buffer holds since the last look
        recent.add(Seen(slot, BLOCK.encode(), 10.0 + n, "uwsgi"))
    later = [n for n, _ in recent.numbered()]
    assert later == sorted(later) and later[0] > 4 and len(later) == 5
    recent.resize(3)  # a reload keeps the newest lines and their ids
    assert [n for n, _ in recent.numbered()] == later[-3:]
    page = list(itertools.islice(recent.select(IncidentQuery(before=later[-1]), redact=True), 2))
    assert [n for n, _ in page] == [later[-2], later[-3]]
