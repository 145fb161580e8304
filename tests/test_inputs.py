"""``gw502d scan``'s inputs: files, directories, gzip, stdin, and whatever is not a log.

Each bad input is one clear error line and exit status 2, and every other input (and
every line before a damaged spot) is still counted. Real files, FIFOs and devices.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from gw502d.source.inputs import InputError, blocks
from gw502d.source.lines import BLOCK_SIZE

ROOT = Path(__file__).resolve().parent.parent
LINE = b"invalid request block size: 4363 (max 4096)...skip"


# As root, permission checks are skipped: without these two capabilities a mode 000 file
# or directory really fails with EACCES, while the interpreter under /root stays readable.
UNPRIVILEGED = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] \
    if os.geteuid() == 0 else []


def scan(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*UNPRIVILEGED, sys.executable, "-m", "gw502d", "scan", "--format",
                           "json", *args],
                          input=stdin.decode() if stdin is not None else None, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def counted(result: subprocess.CompletedProcess[str]) -> int:
    return int(json.loads(result.stdout)["counts"]["request_block_too_big"]["uwsgi"])


def lines_of(path: Path) -> list[bytes]:
    return [line for block in blocks(str(path), 65536) for line in block]


def test_memory_stays_bounded_for_100mb_without_newlines(tmp_path: Path) -> None:
    path = tmp_path / "nonl.log"
    chunk = b"z" * BLOCK_SIZE
    with path.open("wb") as f:
        for _ in range(100):
            f.write(chunk)
        f.write(b"\nnext\n")
    del chunk
    tracemalloc.start()
    try:
        got = lines_of(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [len(line) for line in got] == [65536, 4]
    # One block being read and one being split, plus the capped head: never the line.
    assert peak < 3 * BLOCK_SIZE + 4 * 65536, peak


def test_blocks_and_the_unterminated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(300_000)) + b"tail")
    chunks = list(blocks(str(path), 65536))
    assert len(chunks) > 1
    flat = [line for lines in chunks for line in lines]
    assert flat[0] == b"line 0" and flat[-2] == b"line 299999" and flat[-1] == b"tail"
    assert len(flat) == 300_001
    (tmp_path / "empty.log").write_bytes(b"")
    assert lines_of(tmp_path / "empty.log") == []


def test_gzip_members_and_padding_are_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "app.log.2.gz"
    path.write_bytes(gzip.compress(LINE + b"\n" * 1) + gzip.compress(LINE) + b"\0" * 512)
    assert lines_of(path) == [LINE, LINE]


@pytest.mark.parametrize("damage", ["truncated", "bad_crc"])
def test_damaged_gzip_keeps_every_line_before_the_damage(tmp_path: Path, damage: str) -> None:
    """zcat prints what it decoded before it complains: so does scan."""
    n = 200_000
    data = gzip.compress(b"".join(LINE + b" %d\n" % i for i in range(n)))
    # truncated: the trailer and a little deflate data are gone; bad_crc: one bit flipped
    data = data[:-20] if damage == "truncated" else data[:-8] + bytes([data[-8] ^ 1]) + data[-7:]
    path = tmp_path / "app.log.1.gz"
    path.write_bytes(data)
    zcat = subprocess.run(["zcat", str(path)], capture_output=True, check=False)
    assert zcat.returncode != 0
    result = scan(str(path))
    assert result.returncode == 2
    assert str(path) in result.stderr and len(result.stderr.strip().splitlines()) == 1
    printed = [line for line in zcat.stdout.split(b"\n") if line.startswith(LINE)]
    assert counted(result) == len(printed) > n - 100


def test_fifo_device_and_unreadable_inputs_are_errors_and_others_count(tmp_path: Path) -> None:
    good = tmp_path / "logs" / "good.log"
    good.parent.mkdir()
    good.write_bytes(LINE + b"\n")
    fifo = tmp_path / "logs" / "pipe"
    os.mkfifo(fifo)
    locked = tmp_path / "logs" / "locked"
    locked.mkdir()
    (locked / "hidden.log").write_bytes(LINE + b"\n")
    locked.chmod(0)
    try:
        result = scan("/dev/zero", str(tmp_path / "logs"), str(tmp_path / "missing.log"))
    finally:
        locked.chmod(0o755)
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert any("/dev/zero" in e and "not a regular file" in e for e in errors)
    assert any(str(fifo) in e for e in errors)
    assert any(str(tmp_path / "missing.log") in e for e in errors)
    assert any(str(locked) in e for e in errors)
    assert counted(result) >= 1


def test_an_unreadable_directory_argument_is_not_zero_files(tmp_path: Path) -> None:
    d = tmp_path / "logs"
    d.mkdir()
    (d / "a.log").write_bytes(LINE + b"\n")
    d.chmod(0)
    try:
        result = scan(str(d))
    finally:
        d.chmod(0o755)
    assert result.returncode == 2, result
    assert str(d) in result.stderr and "cannot read directory" in result.stderr


@pytest.mark.parametrize("value", ["0", "-5", "x", str(1 << 40)])
def test_bad_max_line_is_a_usage_error_not_a_traceback(value: str) -> None:
    result = scan("--max-line", value, "-", stdin=b"")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "--max-line" in result.stderr


def test_blocks_raise_input_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing.log"):
        lines_of(tmp_path / "missing.log")
