"""state.json: atomic saves, skipped no-op saves, and bad files that never crash a start."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gw502d.source.identity import fingerprint, fingerprint_length, has_fingerprint
from gw502d.source.state import STATE_FILE, SavedFile, State, StateFile, decode

STATE = State(files=(SavedFile("/var/log/nginx/error.log", 2049, 1234, fingerprint(b"head"), 40),),
              patterns=("/var/log/nginx/*error.log",), extra={"incidents": {"x": 3}})


def warnings(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in logs if e["log_level"] == "warning"]


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state")
    assert sf.save(STATE)
    assert StateFile(tmp_path / "state").load() == STATE
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [STATE_FILE]
    assert (tmp_path / "state" / STATE_FILE).stat().st_mode & 0o777 == 0o600


def test_a_save_replaces_the_file_and_skips_when_nothing_changed(tmp_path: Path) -> None:
    sf = StateFile(tmp_path)
    sf.save(STATE)
    first = (tmp_path / STATE_FILE).stat().st_ino
    sf.save(State(files=STATE.files, patterns=STATE.patterns, extra=dict(STATE.extra)))
    assert (tmp_path / STATE_FILE).stat().st_ino == first  # equal content: no write
    sf.save(State(files=(), patterns=STATE.patterns, extra={}))
    assert (tmp_path / STATE_FILE).stat().st_ino != first  # a new file renamed over it
    assert StateFile(tmp_path).load() == State(files=(), patterns=STATE.patterns, extra={})


def test_a_leftover_tmp_file_from_a_crash_is_harmless(tmp_path: Path) -> None:
    StateFile(tmp_path).save(STATE)
    (tmp_path / f".{STATE_FILE}.{os.getpid()}.tmp").write_bytes(b'{"half": ')
    assert StateFile(tmp_path).load() == STATE
    StateFile(tmp_path).save(State())
    assert StateFile(tmp_path).load() == State()


def test_missing_state_is_a_fresh_start_without_a_warning(tmp_path: Path) -> None:
    with capture_logs() as logs:
        assert StateFile(tmp_path / "nope").load() is None
    assert warnings(logs) == []


@pytest.mark.parametrize("content", [
    b"{not json",
    b"\xff\xfe garbage",
    b"[]",
    b'{"version": 2, "files": [], "patterns": [], "extra": {}}',
    b'{"version": 1, "files": {}, "patterns": [], "extra": {}}',
    b'{"version": 1, "files": [], "patterns": [], "extra": []}',
    b'{"version": 1, "files": [{"path": "/a", "dev": 1, "ino": 2, "fingerprint": "0:x",'
    b' "offset": -5}], "patterns": [], "extra": {}}',
    b'{"version": 1, "files": [{"path": "/a", "dev": true, "ino": 2, "fingerprint": "0:x",'
    b' "offset": 5}], "patterns": [], "extra": {}}',
    b'{"version": 1, "files": [{"path": "/a", "dev": 1, "ino": 2, "fingerprint": "nohash",'
    b' "offset": 5}], "patterns": [], "extra": {}}',
    b'{"version": 1, "files": [7], "patterns": [], "extra": {}}',
    b"[" * 100_000,
])
def test_a_corrupt_state_file_is_one_warning_and_a_fresh_start(tmp_path: Path,
                                                               content: bytes) -> None:
    (tmp_path / STATE_FILE).write_bytes(content)
    with capture_logs() as logs:
        assert StateFile(tmp_path).load() is None
    assert [e["event"] for e in warnings(logs)] == ["state file corrupt, starting fresh"]


def test_an_unreadable_state_file_is_one_warning(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).mkdir()  # reading it fails with EISDIR
    with capture_logs() as logs:
        assert StateFile(tmp_path).load() is None
    assert [e["event"] for e in warnings(logs)] == ["state file unreadable, starting fresh"]


def test_failing_saves_warn_once_and_recover(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    sf = StateFile(blocker)
    with capture_logs() as logs:
        assert not sf.save(STATE)
        assert not sf.save(State())
        blocker.unlink()
        assert sf.save(STATE)
    assert [e["event"] for e in logs] == ["cannot save state", "saving state works again"]
    assert StateFile(blocker).load() == STATE


def test_the_document_lists_the_required_fields(tmp_path: Path) -> None:
    StateFile(tmp_path).save(STATE)
    doc = json.loads((tmp_path / STATE_FILE).read_bytes())
    assert doc["files"] == [{"path": "/var/log/nginx/error.log", "dev": 2049, "ino": 1234,
                             "fingerprint": fingerprint(b"head"), "offset": 40,
                             "draining": False}]
    assert doc["extra"] == {"incidents": {"x": 3}}
    assert doc["saved_at"] == STATE.saved_at
    assert decode(STATE.encode()) == STATE


def test_fingerprints_cover_the_first_bytes_only(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    fp = fingerprint(b"abc")
    assert fingerprint_length(fp) == 3
    fd = os.open(path, os.O_RDONLY)
    try:
        assert has_fingerprint(fd, fp)
        path.write_bytes(b"abcdef")  # grown: the first 3 bytes still match
        assert has_fingerprint(fd, fp)
        path.write_bytes(b"xbcdef")  # replaced in place
        assert not has_fingerprint(fd, fp)
        path.write_bytes(b"ab")  # truncated below the fingerprint
        assert not has_fingerprint(fd, fp)
    finally:
        os.close(fd)
    with pytest.raises(ValueError, match="bad fingerprint"):
        fingerprint_length("abc")
