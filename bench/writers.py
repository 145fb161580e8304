#!/usr/bin/env python3
"""Writer processes: they append to the files the daemon follows, as servers do.

Each runs in its own interpreter (``python3 bench/writers.py KIND ARGS``), so it shares no
GIL with the harness that polls the daemon, and prints a JSON summary. Times are
CLOCK_MONOTONIC, the clock of the harness too. :func:`start` and :func:`result` are the
harness's side.

- ``copy SRC CHUNK DST...``: SRC appended in CHUNK-byte writes ending on a line boundary,
  the writes dealt to the DSTs in turn, as fast as it goes (a backlog to drain);
- ``rate DST RATE SECONDS TIMES``: one incident line per write() at RATE lines/s, each
  line's write time saved to TIMES (int64 ns);
- ``lines SRC DST SECONDS RATE``: SRC's lines over and over, one write() each, for
  SECONDS (at RATE lines/s, 0: as fast as it can);
- ``storm DST COUNT``: COUNT nginx incident lines, each with its own URI and client, in
  ~1 MiB writes;
- ``journal-rate JOURNAL RATE SECONDS TIMES``: ``rate``'s lines as journal entries of
  ``app.service`` (and one of ``other.service`` per ten, which a unit match filters out),
  piped into a ``systemd-journal-remote -o JOURNAL -`` this writer runs (what is due,
  every half millisecond), as journald receives a service's lines and stores them.
"""

from __future__ import annotations

import array
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

MiB = 1 << 20
JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
# The latency line: the upstream_timeout example of patterns/nginx.toml (reading the
# response header), with a date and connection number of our own.
TIMEOUT_LINE = ('%s [error] 812#812: *%d upstream timed out (110: Connection timed out) while '
                'reading response header from upstream, client: 127.0.0.1, server: localhost, '
                'request: "GET /slow HTTP/1.1", upstream: "http://127.0.0.1:8000/slow", '
                'host: "localhost"\n')
# Storm lines: five nginx incidents, each line with its own URI and client, as a scan of
# the whole address space would give (nginx copies the request's URI into the upstream of
# a proxy_pass without a URI part).
STORM = (
    ("[error]", "upstream timed out (110: Connection timed out) while reading response header "
     "from upstream", '"http://10.1.0.{u}:8000{uri}"'),
    ("[error]", "upstream sent too big header while reading response header from upstream",
     '"uwsgi://127.0.0.1:5000"'),
    ("[error]", "connect() failed (111: Connection refused) while connecting to upstream",
     '"http://10.1.0.{u}:8001{uri}"'),
    ("[error]", "upstream prematurely closed connection while reading response header from "
     "upstream", '"uwsgi://unix:/run/uwsgi/app.sock:"'),
    ("[info]", "client prematurely closed connection while sending response to client",
     '"http://10.1.0.{u}:8000{uri}"'),
)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _open_append(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def _chunks(src: str, size: int) -> Iterator[bytes]:
    """*src* in pieces of about *size* bytes that end on a line boundary."""
    carry = b""
    with open(src, "rb") as f:
        while block := f.read(size):
            block = carry + block
            cut = block.rfind(b"\n") + 1
            carry = block[cut:]
            if cut:
                yield block[:cut]
    if carry:
        yield carry + b"\n"


def copy(src: str, chunk: int, dsts: list[str]) -> dict[str, int]:
    """Append *src* to *dsts* in turn, *chunk* bytes a write, at full speed."""
    fds = [_open_append(d) for d in dsts]
    first = last = lines = size = 0
    for n, block in enumerate(_chunks(src, chunk)):
        first = first or time.monotonic_ns()
        _write_all(fds[n % len(fds)], block)
        last = time.monotonic_ns()
        lines += block.count(b"\n")
        size += len(block)
    for fd in fds:
        os.close(fd)
    return {"first_ns": first, "last_ns": last, "lines": lines, "bytes": size}


def rate(dst: str, per_second: int, seconds: float, times: str) -> dict[str, int]:
    """Incident lines at *per_second*, one write() per line as nginx does; the time of
    each line, taken just before its write(), saved to *times* for the poller."""
    fd = _open_append(dst)
    stamps = array.array("q")
    start = time.monotonic()
    n = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * per_second) + 1
        date = time.strftime("%Y/%m/%d %H:%M:%S")
        while n < due:
            line = (TIMEOUT_LINE % (date, n + 1)).encode()
            stamps.append(time.monotonic_ns())
            os.write(fd, line)
            n += 1
        time.sleep(0.0005)
    os.close(fd)
    Path(times).write_bytes(stamps.tobytes())
    return {"first_ns": stamps[0], "last_ns": time.monotonic_ns(), "lines": n}


def journal_rate(journal: str, per_second: int, seconds: float, times: str) -> dict[str, int]:
    """:func:`rate` into the journal: the entries due are written every half millisecond."""
    sink = subprocess.Popen([JOURNAL_REMOTE, f"--output={journal}", "-"],
                            stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert sink.stdin is not None
    boot = uuid.uuid4().hex.encode()
    stamps = array.array("q")
    start = time.monotonic()
    n = k = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * per_second) + 1
        date = time.strftime("%Y/%m/%d %H:%M:%S")
        chunk = []
        while n < due:
            k += 1
            ours = k % 10 != 0
            message = (TIMEOUT_LINE % (date, n + 1)).rstrip("\n") if ours else "other"
            if ours:
                stamps.append(time.monotonic_ns())
                n += 1
            chunk.append(b"__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=%s\n"
                         b"_SYSTEMD_UNIT=%s\nSYSLOG_IDENTIFIER=nginx\nMESSAGE=%s\n\n" % (
                             time.time_ns() // 1000, time.monotonic_ns() // 1000, boot,
                             b"app.service" if ours else b"other.service", message.encode()))
        if chunk:
            sink.stdin.write(b"".join(chunk))
            sink.stdin.flush()
        time.sleep(0.0005)
    sink.stdin.close()
    sink.wait()
    Path(times).write_bytes(stamps.tobytes())
    return {"first_ns": stamps[0], "last_ns": time.monotonic_ns(), "lines": n}


def _batches(src: str) -> Iterator[list[bytes]]:
    """*src*'s lines in batches, over and over."""
    while True:
        for block in _chunks(src, 4 * MiB):
            yield block.splitlines(keepends=True)


def lines(src: str, dst: str, seconds: float, per_second: int) -> dict[str, int]:
    """*src*'s lines, one write() each, for *seconds* (at *per_second*, 0: at full speed)."""
    fd = _open_append(dst)
    first = time.monotonic_ns()
    end = first + int(seconds * 1e9)
    n = size = 0
    write = os.write
    for batch in _batches(src):
        for i in range(0, len(batch), 1000):
            now = time.monotonic_ns()
            if now >= end:
                break
            if per_second:
                ahead = n / per_second - (now - first) / 1e9
                if ahead > 0:
                    time.sleep(ahead)
            part = batch[i:i + 1000]
            for line in part:
                write(fd, line)
            n += len(part)
            size += sum(map(len, part))
        else:
            continue
        break
    last = time.monotonic_ns()
    os.close(fd)
    return {"first_ns": first, "last_ns": last, "lines": n, "bytes": size}


def storm_line(i: int) -> bytes:
    """Incident line *i* of a storm of distinct incidents: its own URI, client and
    connection number."""
    level, message, upstream = STORM[i % len(STORM)]
    uri = f"/shop/item/{i}?ref={i * 7919 % 1000003}"
    client = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    ups = upstream.format(u=i % 250 + 1, uri=uri)
    return (f"2026/11/22 03:00:{i // 20000 % 60:02d} {level} 812#812: *{i + 1} {message}, "
            f'client: {client}, server: shop.example.net, request: "GET {uri} HTTP/1.1", '
            f'upstream: {ups}, host: "shop.example.net"\n').encode()


def storm(dst: str, count: int) -> dict[str, int]:
    """*count* storm lines in ~1 MiB writes, generated as they are written."""
    fd = _open_append(dst)
    first = 0
    buf: list[bytes] = []
    size = 0
    for i in range(count):
        line = storm_line(i)
        buf.append(line)
        size += len(line)
        if size >= MiB or i == count - 1:
            first = first or time.monotonic_ns()
            _write_all(fd, b"".join(buf))
            buf, size = [], 0
    last = time.monotonic_ns()
    os.close(fd)
    return {"first_ns": first, "last_ns": last, "lines": count}


def start(kind: str, *args: object) -> subprocess.Popen[str]:
    """A writer process of *kind* (its own interpreter: no GIL shared with the harness)."""
    return subprocess.Popen([sys.executable, __file__, kind, *map(str, args)],
                            stdout=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen[str]) -> dict[str, int]:
    """The writer's summary once it is done."""
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"writer failed ({proc.returncode})")
    summary: dict[str, int] = json.loads(out)
    return summary


def main(argv: list[str]) -> int:
    kind, args = argv[0], argv[1:]
    if kind == "copy":
        summary = copy(args[0], int(args[1]), args[2:])
    elif kind == "rate":
        summary = rate(args[0], int(args[1]), float(args[2]), args[3])
    elif kind == "lines":
        summary = lines(args[0], args[1], float(args[2]), int(args[3]))
    elif kind == "storm":
        summary = storm(args[0], int(args[1]))
    elif kind == "journal-rate":
        summary = journal_rate(args[0], int(args[1]), float(args[2]), args[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
