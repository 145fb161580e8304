"""Rotation decisions without a disk: a look over a file system made of dicts, then the
actions the follower takes. The same rules run against real files in test_follower.py."""

from __future__ import annotations

import fnmatch
import os
import stat

import pytest

from gw502d.source.decide import Action, decide
from gw502d.source.observe import Observation, observe
from gw502d.source.spec import LogSpec

NGINX = LogSpec("/var/log/nginx/error.log", "nginx", "nginx")
APPS = LogSpec("/var/log/app/*.log", "apps", None)
SITES = LogSpec("/srv/*/logs/app.log", "sites", None)


def st(ino: int, *, mode: int = stat.S_IFREG | 0o644, size: int = 0) -> os.stat_result:
    return os.stat_result((mode, ino, 1, 1, 0, 0, size, 0, 0, 0))


class FakeFS:
    """Paths -> stat results; directories are the paths' parents (or listed)."""

    def __init__(self, files: dict[str, os.stat_result], *, denied: set[str] = frozenset(),
                 dirs: set[str] = frozenset()) -> None:
        self.files = files
        self.denied = set(denied)
        self.dirs = set(dirs) | {os.path.dirname(p) for p in files}

    def stat(self, path: str) -> os.stat_result:
        if path in self.denied:
            raise PermissionError(13, "Permission denied")
        if path in self.files:
            return self.files[path]
        if path in self.dirs:
            return st(999, mode=stat.S_IFDIR | 0o755)
        raise FileNotFoundError(2, "No such file or directory")

    def listdir(self, path: str) -> list[str]:
        if path in self.denied:
            raise PermissionError(13, "Permission denied")
        if path not in self.dirs:
            raise FileNotFoundError(2, "No such file or directory")
        return [os.path.basename(p) for p in self.files if os.path.dirname(p) == path]

    def isdir(self, path: str) -> bool:
        return path in self.dirs

    def glob(self, pattern: str) -> list[str]:
        return [d for d in self.dirs if fnmatch.fnmatchcase(d, pattern)]


def look(fs: FakeFS, *specs: LogSpec, waiting: set[str] = frozenset(),
         followed: dict[str, list[str]] | None = None) -> Observation:
    return observe(specs, waiting=lambda p: p in waiting,
                   followed=lambda d: (followed or {}).get(d, []), fs=fs)


def kinds(actions: list[Action]) -> list[tuple[str, str]]:
    return [(a.kind, a.path) for a in actions]


def test_a_new_file_is_opened_and_an_unchanged_one_left_alone() -> None:
    seen = look(FakeFS({NGINX.path: st(10)}), NGINX)
    assert kinds(decide({}, {}, seen)) == [("open", NGINX.path)]
    assert decide({NGINX.path: (1, 10)}, {}, seen) == []


@pytest.mark.parametrize("how", ["rename+create", "delete+recreate", "atomic replace"])
def test_another_inode_at_the_path_is_a_rotation(how: str) -> None:
    """All three look alike from the path: another inode; the old one is drained."""
    seen = look(FakeFS({NGINX.path: st(11)}), NGINX)
    assert kinds(decide({NGINX.path: (1, 10)}, {}, seen)) == [
        ("rotated", NGINX.path), ("open", NGINX.path)]


def test_a_path_gone_is_drained_and_a_missing_one_waited_for() -> None:
    seen = look(FakeFS({}, dirs={"/var/log/nginx"}), NGINX)
    assert kinds(decide({NGINX.path: (1, 10)}, {}, seen)) == [("gone", NGINX.path)]
    assert seen.missing == {NGINX.path: NGINX}


def test_a_file_renamed_to_another_matched_name_is_not_read_twice() -> None:
    seen = look(FakeFS({"/var/log/app/b.log": st(10)}), APPS)
    actions = decide({"/var/log/app/a.log": (1, 10)}, {}, seen)
    assert kinds(actions) == [("renamed", "/var/log/app/b.log")]
    assert actions[0].ident == (1, 10)


def test_a_rotated_file_renamed_back_into_the_glob_is_taken_from_draining() -> None:
    files = {"/var/log/app/a.log": st(11), "/var/log/app/a-old.log": st(10)}
    actions = decide({"/var/log/app/a.log": (1, 11)}, {(1, 10): "/var/log/app/a.log"},
                     look(FakeFS(files), APPS))
    assert kinds(actions) == [("renamed", "/var/log/app/a-old.log")]


def test_rename_and_create_at_once_in_any_order() -> None:
    """a.log -> a.log.1 (both matched) and a new a.log: the old inode follows its name,
    the new file is opened; the order of the actions does not lose either."""
    spec = LogSpec("/var/log/app/a.log*", "a", None)
    files = {"/var/log/app/a.log": st(12), "/var/log/app/a.log.1": st(10)}
    actions = decide({"/var/log/app/a.log": (1, 10)}, {}, look(FakeFS(files), spec))
    assert sorted(kinds(actions)) == sorted([
        ("rotated", "/var/log/app/a.log"), ("open", "/var/log/app/a.log"),
        ("renamed", "/var/log/app/a.log.1")])


def test_an_undecidable_path_keeps_what_is_followed() -> None:
    """An error, or a path still backing off, is no reason to stop following a file."""
    denied = look(FakeFS({NGINX.path: st(10)}, denied={NGINX.path}), NGINX)
    assert decide({NGINX.path: (1, 10)}, {}, denied) == []
    assert "Permission denied" in denied.errors[NGINX.path][1]
    waiting = look(FakeFS({}), NGINX, waiting={NGINX.path})
    assert decide({NGINX.path: (1, 10)}, {}, waiting) == []
    glob_dir = look(FakeFS({"/var/log/app/a.log": st(10)}, denied={"/var/log/app"}), APPS,
                    followed={"/var/log/app": ["/var/log/app/a.log"]})
    assert decide({"/var/log/app/a.log": (1, 10)}, {}, glob_dir) == []


def test_what_a_look_does_not_follow_is_said() -> None:
    fifo = st(20, mode=stat.S_IFIFO | 0o644)
    seen = look(FakeFS({"/var/log/app/a.log": st(10), "/var/log/app/p.log": fifo,
                        NGINX.path: st(30, mode=stat.S_IFDIR | 0o755)}), APPS, NGINX)
    assert set(seen.files) == {"/var/log/app/a.log"}
    assert seen.skipped == {"/var/log/app/p.log": (APPS, "not a regular file")}
    assert seen.errors == {NGINX.path: (NGINX, "is a directory")}


def test_globs_in_the_directory_part_find_new_directories() -> None:
    fs = FakeFS({"/srv/a/logs/app.log": st(1), "/srv/b/logs/app.log": st(2),
                 "/srv/b/logs/other.log": st(3)})
    seen = look(fs, SITES)
    assert set(seen.files) == {"/srv/a/logs/app.log", "/srv/b/logs/app.log"}
    assert seen.dirs == {"/srv/a/logs", "/srv/b/logs"}


def test_hidden_files_match_only_a_hidden_pattern() -> None:
    fs = FakeFS({"/var/log/app/.x.log": st(1), "/var/log/app/x.log": st(2)})
    assert set(look(fs, APPS).files) == {"/var/log/app/x.log"}
    hidden = LogSpec("/var/log/app/.*.log", "h", None)
    assert set(look(fs, hidden).files) == {"/var/log/app/.x.log"}
