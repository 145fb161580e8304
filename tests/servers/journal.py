"""Real journal files without a running systemd, and a real rsyslogd on 127.0.0.1.

``systemd-journal-remote -o FILE -`` turns an export-format stream
(https://systemd.io/JOURNAL_EXPORT_FORMATS/) into a real journal file and appends to it on
a second run, so journalctl reads what it would read on a host. Why: the journal source
is tested against journalctl as it is, not against a fake of it.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import struct
import subprocess
import threading
import time
import tomllib
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

from tests.servers.harness import HOST, Proc, read_lines, wait_for_line

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
ROOT = Path(__file__).resolve().parents[2]

Fields = Mapping[str, str | bytes]


def export_entry(fields: Fields) -> bytes:
    """One entry in the export format: text fields as ``KEY=value``, others length-prefixed."""
    out = []
    for key, value in fields.items():
        raw = value.encode() if isinstance(value, str) else value
        if b"\n" in raw or not isinstance(value, str):
            out.append(key.encode() + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n")
        else:
            out.append(key.encode() + b"=" + raw + b"\n")
    return b"".join(out) + b"\n"


class JournalWriter:
    """Appends entries to one journal file, as one boot of one host would have them."""

    def __init__(self, path: Path, hostname: str = "web1") -> None:
        self.path = path
        self.hostname = hostname
        self.boot_id = uuid.uuid4().hex
        self._mono0 = time.monotonic_ns() // 1000
        self._last = 0
        self._archives = 0

    def rotate(self) -> Path:
        """Archive the file as journald does when it rotates (renamed to ``NAME@N.journal``;
        appends go on in a new file of the old name); returns the archive's path.

        The rename matters: a reader following with a match (``journalctl
        _SYSTEMD_UNIT=...``, systemd 252) may count an entry before the writer has linked
        it to the match's data and then not look at that file again until its number of
        entries changes, so the entry is missed if the writer leaves the file as it is and
        goes on in another; journald's rename makes readers open the file anew (seen once
        in some 3,600 switches to a new name without a rename, never in 3,800 with one)."""
        self._archives += 1
        archive = self.path.with_name(f"{self.path.stem}@{self._archives}.journal")
        self.path.rename(archive)
        return archive

    def new_boot(self) -> None:
        """Entries from now on belong to a new boot (monotonic time starts again)."""
        self.boot_id = uuid.uuid4().hex
        self._mono0 = time.monotonic_ns() // 1000 - 1_000_000

    def entry(self, message: str | bytes, *, unit: str | None = None,
              ident: str | None = None, **extra: str | bytes) -> dict[str, str | bytes]:
        """The fields journald would store for one line a service wrote to stdout."""
        now = max(time.time_ns() // 1000, self._last + 1)
        self._last = now
        fields: dict[str, str | bytes] = {
            "__REALTIME_TIMESTAMP": str(now),
            "__MONOTONIC_TIMESTAMP": str(time.monotonic_ns() // 1000 - self._mono0),
            "_BOOT_ID": self.boot_id,
            "_HOSTNAME": self.hostname,
            "_TRANSPORT": "stdout",
            "PRIORITY": "6",
        }
        if unit is not None:
            fields["_SYSTEMD_UNIT"] = unit
        if ident is not None:
            fields["SYSLOG_IDENTIFIER"] = ident
        fields.update(extra)
        fields["MESSAGE"] = message
        return fields

    def append(self, entries: Iterable[Fields], path: Path | None = None) -> None:
        """Write entries (to this writer's file, or ``path``) with systemd-journal-remote."""
        data = b"".join(export_entry(e) for e in entries)
        res = subprocess.run([JOURNAL_REMOTE, f"--output={path or self.path}", "-"],
                             input=data, capture_output=True, timeout=60, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"systemd-journal-remote failed: {res.stderr.decode()}")


class JournalStream:
    """One ``systemd-journal-remote -o FILE -`` fed through a pipe: each entry is in the
    file, and announced to ``journalctl --follow``, as soon as it is written, like
    journald's (without journald's 250 ms coalescing of the announcements)."""

    def __init__(self, writer: JournalWriter) -> None:
        self.writer = writer
        self.proc = subprocess.Popen([JOURNAL_REMOTE, f"--output={writer.path}", "-"],
                                     stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._lock = threading.Lock()

    def write(self, entries: Iterable[Fields]) -> None:
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(b"".join(export_entry(e) for e in entries))
            self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> JournalStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StdoutPump:
    """journald's part for a service: the lines a server writes to its log file become
    journal entries of ``unit``/``ident``, stamped when they are read (as journald stamps
    a stdout stream's lines when they arrive). Polls the file every 10 ms in a thread."""

    def __init__(self, path: Path, stream: JournalStream, *, unit: str, ident: str) -> None:
        self.path = path
        self.stream = stream
        self.unit = unit
        self.ident = ident
        self.lines: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pump", daemon=True)

    def _run(self) -> None:
        offset, rest = 0, b""
        while True:
            stopping = self._stop.is_set()
            with contextlib.suppress(FileNotFoundError), self.path.open("rb") as f:
                f.seek(offset)
                data = f.read()
                offset += len(data)
                *lines, rest = (rest + data).split(b"\n")
                if lines:
                    w = self.stream.writer
                    self.stream.write([w.entry(line, unit=self.unit, ident=self.ident)
                                       for line in lines])
                    self.lines += lines
            if stopping:
                return
            self._stop.wait(0.01)

    def __enter__(self) -> StdoutPump:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def torture_run(markexpr: str, default: float) -> tuple[float, int, random.Random]:
    """A torture test's length (``GW502D_TORTURE_SECONDS``; 60 s with ``-m slow``, else
    *default*), its seed (printed on failure, to replay it) and its random source."""
    seconds = float(os.environ.get("GW502D_TORTURE_SECONDS", "0")) or (
        60.0 if markexpr.strip() == "slow" else default)
    seed = random.randrange(1 << 30)
    return seconds, seed, random.Random(seed)


def cmdline(pid: int) -> bytes:
    """A process's NUL-separated argv (b"" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def journalctls(where: Path) -> list[int]:
    """PIDs of journalctl processes reading a journal under *where* (ours: a test's)."""
    found = []
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        argv = cmdline(pid).split(b"\0")
        if argv[0].endswith(b"journalctl") and any(str(where).encode() in a for a in argv):
            found.append(pid)
    return found


def real_lines(family: str) -> list[str]:
    """The catalog's example lines that the server wrote itself (origin ``real:``)."""
    doc = tomllib.loads((ROOT / "patterns" / f"{family}.toml").read_text())
    lines = [ex["line"] for inc in doc.get("incident", []) for ex in inc.get("example", [])
             if ex.get("origin", "").startswith("real:")]
    lines += [b["line"] for b in doc.get("benign", []) if b.get("origin", "").startswith("real:")]
    if not lines:
        raise AssertionError(f"no real: examples for {family}")
    return lines


# --------------------------------------------------------------------------- rsyslog

#: rsyslog's built-in file templates (rsyslog 8.2302, tools/rsyslogd: the RSYSLOG_* names).
RSYSLOG_FORMATS = {
    "traditional": "RSYSLOG_TraditionalFileFormat",  # Oct 14 13:38:27 web1 nginx[1]: msg
    "precise": "RSYSLOG_FileFormat",  # 2025-10-14T13:38:27.123456+00:00 web1 nginx[1]: msg
    "protocol23": "RSYSLOG_SyslogProtocol23Format",  # <13>1 2025-10-14T... web1 nginx 1 - - msg
}


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


class Rsyslog:
    """rsyslogd in the foreground with imudp on 127.0.0.1, writing every message to one
    file per format in :data:`RSYSLOG_FORMATS` (``self.files[name]``)."""

    def __init__(self, tmpdir: Path) -> None:
        self.tmpdir = tmpdir
        self.port = free_udp_port()
        self.files = {name: tmpdir / f"{name}.log" for name in RSYSLOG_FORMATS}
        self.conf = tmpdir / "rsyslog.conf"
        self.pidfile = tmpdir / "rsyslogd.pid"
        self.proc: Proc | None = None

    def start(self, timeout: float = 10.0) -> Rsyslog:
        actions = "\n".join(
            f'*.* action(type="omfile" file="{self.files[name]}" template="{template}")'
            for name, template in RSYSLOG_FORMATS.items())
        self.conf.write_text(
            f'global(workDirectory="{self.tmpdir}")\n'
            'module(load="imudp")\n'
            f'input(type="imudp" address="{HOST}" port="{self.port}")\n'
            f"{actions}\n")
        self.proc = Proc(["rsyslogd", "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                         self.tmpdir / "rsyslogd.out").start()
        deadline = time.monotonic() + timeout
        while True:  # ready once a probe message comes out
            self.send("gw502d-probe", "ready")
            if any("gw502d-probe" in ln for ln in read_lines(self.files["traditional"])):
                return self
            if time.monotonic() > deadline or not self.proc.running():
                out = (self.tmpdir / "rsyslogd.out").read_text(errors="replace")
                self.stop()
                raise TimeoutError(f"rsyslogd did not start:\n{out}")
            time.sleep(0.1)

    def send(self, tag: str, message: str, *, rfc: str = "3164", pid: int | None = None) -> None:
        """``logger`` over UDP, as a program using syslog(3) towards this server would."""
        argv = ["logger", "-n", HOST, "-P", str(self.port), "-d", f"--rfc{rfc}", "-t", tag]
        if pid is not None:
            argv.append(f"--id={pid}")
        subprocess.run([*argv, "--", message], check=True, timeout=10)

    def wait_for(self, match: str, timeout: float = 10.0) -> dict[str, list[str]]:
        """Every format's lines once each file has a line containing ``match``."""
        return {name: wait_for_line(path, match, timeout) for name, path in self.files.items()}

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def __enter__(self) -> Rsyslog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def kill_quietly(pid: int | None) -> None:
    """SIGKILL a process we started, if it still runs."""
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
