"""``gw502d scan | explain | patterns`` as a user runs them (subprocess, real files)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

NGX = "2024/05/01 10:00:0{s} [error] 812#812: *{s} "
LINES = [
    NGX.format(s=1) + "upstream sent too big header while reading response header from upstream, "
    'client: 10.0.0.1, server: localhost, request: "GET /a HTTP/1.1", '
    'upstream: "uwsgi://127.0.0.1:3031", host: "localhost"',
    "[pid: 2201|app: 0|req: 5/17] 10.0.0.7 () {34 vars in 512 bytes} [Thu May  2 10:00:00 2024] "
    "GET / => generated 2 bytes in 1 msecs (HTTP/1.1 200) 2 headers in 64 bytes",
    "invalid request block size: 4363 (max 4096)...skip",
    NGX.format(s=2) + "upstream sent too big header while reading response header from upstream, "
    'client: 10.0.0.2, server: localhost, request: "GET /b HTTP/1.1", '
    'upstream: "uwsgi://127.0.0.1:3031", host: "localhost"',
    "Traceback (most recent call last):",
    '  File "x.py", line 1, in <module>',
    "BrokenPipeError: [Errno 32] Broken pipe",
]


def gw502d(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "gw502d", *args], input=stdin,
                          capture_output=True, timeout=60, check=False)


def write_log(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.log"
    path.write_text("\n".join(LINES) + "\n")
    return path


def test_scan_json_summary_counts_every_known_pair(tmp_path):
    out = gw502d("scan", "--format", "json", str(write_log(tmp_path)))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["lines"] == len(LINES)
    assert summary["counts"]["upstream_header_too_big"]["nginx"] == 2
    assert summary["counts"]["request_block_too_big"]["uwsgi"] == 1
    assert summary["counts"]["client_disconnect"]["werkzeug"] == 1
    assert summary["counts"]["worker_timeout"]["gunicorn"] == 0
    assert "uwsgi://127.0.0.1:3031" in summary["remediation"]["upstream_header_too_big"]["nginx"]


def test_scan_jsonl_one_object_per_occurrence_with_record_line(tmp_path):
    out = gw502d("scan", "--format", "jsonl", str(write_log(tmp_path)))
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["incident"] for r in records] == [
        "upstream_header_too_big", "request_block_too_big", "upstream_header_too_big",
        "client_disconnect"]
    assert all(set(r) == {"path", "line", "source", "incident", "fields", "root_cause",
                          "remediation"} for r in records)
    assert [r["line"] for r in records] == [1, 3, 4, 5]  # the traceback starts at line 5
    assert records[1]["fields"] == {"block_size": 4363, "max": 4096}


def test_scan_jsonl_writes_what_a_line_can_hold(tmp_path):
    """A block size past 64 bits (orjson refuses those) and bytes that are not UTF-8 still
    make one valid JSON record each."""
    log = tmp_path / "odd.log"
    log.write_bytes(b"invalid request block size: 123456789012345678901234567890 (max 4096)"
                    b"...skip\n" + NGX.format(s=3).encode()
                    + b"upstream sent too big header while reading response header"
                    b' from upstream from upstream, client: 10.0.0.1, server: \xff\xfe, '
                    b'request: "GET /\xc3( HTTP/1.1", upstream: "uwsgi://127.0.0.1:3031"\n')
    out = gw502d("scan", "--format", "jsonl", str(log))
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["incident"] for r in records] == ["request_block_too_big",
                                                "upstream_header_too_big"]
    assert records[0]["fields"]["block_size"] == 123456789012345678901234567890


def test_scan_reads_gzip_stdin_and_directories(tmp_path):
    log = write_log(tmp_path)
    (tmp_path / "old.log.1.gz").write_bytes(gzip.compress(log.read_bytes()))
    out = gw502d("scan", "--format", "json", str(tmp_path))
    assert json.loads(out.stdout)["counts"]["upstream_header_too_big"]["nginx"] == 4
    out = gw502d("scan", "--format", "json", "-", stdin=log.read_bytes())
    assert json.loads(out.stdout)["lines"] == len(LINES)


def test_scan_text_report_names_incident_and_fix(tmp_path):
    out = gw502d("scan", str(write_log(tmp_path)))
    text = out.stdout.decode()
    assert "upstream_header_too_big (nginx, error, HTTP 502): 2 line(s)" in text
    assert "fix:" in text and "first seen: 2024/05/01 10:00:01" in text


def test_scan_unreadable_input_is_a_clear_error_and_others_still_count(tmp_path):
    out = gw502d("scan", "--format", "json", str(tmp_path / "missing.log"),
                 str(write_log(tmp_path)))
    assert out.returncode == 2
    assert b"missing.log: cannot read: No such file or directory" in out.stderr
    assert json.loads(out.stdout)["counts"]["upstream_header_too_big"]["nginx"] == 2


def test_scan_survives_hostile_bytes(tmp_path):
    path = tmp_path / "bad.log"
    path.write_bytes(b"\x00\xff\xfe garbage\n" + b"x" * (3 << 20) + b"\n" +
                     LINES[2].encode() + b"\n\x80\x81 partial without newline")
    out = gw502d("scan", "--format", "json", "--max-line", "4096", str(path))
    assert out.returncode == 0
    summary = json.loads(out.stdout)
    assert summary["lines"] == 4
    assert summary["counts"]["request_block_too_big"]["uwsgi"] == 1


def test_explain_says_what_and_why_not():
    out = gw502d("explain", "--format", "json", LINES[0])
    verdict = json.loads(out.stdout)
    assert verdict["incident"] == "upstream_header_too_big"
    assert verdict["fields"]["upstream"] == "uwsgi://127.0.0.1:3031"
    out = gw502d("explain", "--format", "json", LINES[1])
    verdict = json.loads(out.stdout)
    assert verdict["incident"] is None and verdict["family"] == "uwsgi"
    assert "no incident template" in verdict["why"]


def test_patterns_test_reports_mismatches_of_a_user_file(tmp_path):
    good = gw502d("patterns", "test")
    assert good.returncode == 0 and b" 0 failed" in good.stdout
    bad = tmp_path / "mine.toml"
    bad.write_text(
        "family = 'uwsgi'\n[[incident]]\nid = 'mine'\nseverity = 'error'\nstatus = 502\n"
        "summary = 's'\nmessages = ['my app exploded']\nremediation = 'r'\n"
        "[[incident.example]]\nline = 'my app imploded'\norigin = 'claim'\n")
    out = gw502d("patterns", "test", str(bad))
    assert out.returncode == 2
    assert b"expected mine, got none: my app imploded" in out.stdout
    listed = gw502d("patterns", "list")
    assert b"upstream_backlog_full" in listed.stdout
