"""Write a checked plan for real: backups first, each file replaced atomically, undone
when the server's own check of the result fails.

Backups go to a directory of their own (``BACKUP_DIR/<time>-<pid>/<path>``), never next to
the file: a ``shop.bak`` beside sites-enabled/shop would be loaded by ``include
sites-enabled/*``. A file is replaced by renaming a fully written and synced temporary
file (a dotfile, which nginx's include globs skip) over it, with the original's mode and
owner, so a reader sees the old or the new file, never half of one; a symlink is kept
(the file it points to is the one replaced).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gw502d.remediate.hostconf.change import FileChange, Plan
from gw502d.remediate.hostconf.nginxread import NginxFiles, nginx_binary
from gw502d.remediate.hostconf.result import os_reason
from gw502d.remediate.hostconf.validate import check_nginx, nginx_t

Check = Callable[[], str | None]


@dataclass(frozen=True, slots=True)
class Applied:
    """What apply did: ``ok``, or the reason nothing (or, after a rollback, nothing
    lasting) was changed; the files written and their backups."""

    ok: bool
    reason: str = ""
    written: tuple[str, ...] = ()
    backups: tuple[str, ...] = ()


def apply_plan(plan: Plan, backup_dir: str | Path, *, before: Check = lambda: None,
               after: Check = lambda: None) -> Applied:
    """Write *plan* if *before* (the check on a copy) passes; undo it if *after* (the
    check of the real result) fails."""
    if not plan.changes:
        return Applied(False, "; ".join(plan.refused) or "nothing to change")
    reason = before()
    if reason is not None:
        return Applied(False, reason)
    for change in plan.changes:
        try:
            current = Path(change.real).read_text(encoding="utf-8")
        except OSError as e:
            return Applied(False, f"{change.real}: {os_reason(e)}")
        if current != change.old:
            return Applied(False, f"{change.real} changed since the plan was made")
    stamp = Path(backup_dir) / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    backups: list[str] = []
    written: list[FileChange] = []
    try:
        for change in plan.changes:
            backup = stamp / change.real.lstrip("/")
            backup.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            shutil.copy2(change.real, backup)
            backups.append(str(backup))
        for change in plan.changes:
            replace_file(change.real, change.new)
            written.append(change)
    except OSError as e:
        _undo(written)
        return Applied(False, f"{e.filename}: {os_reason(e)}; nothing changed",
                       (), tuple(backups))
    reason = after()
    if reason is not None:
        _undo(written)
        return Applied(False, f"{reason}; the change was undone", (), tuple(backups))
    return Applied(True, "", tuple(c.real for c in written), tuple(backups))


def _undo(written: list[FileChange]) -> None:
    for change in reversed(written):
        replace_file(change.real, change.old)


def replace_file(path: str, text: str) -> None:
    """Atomically replace *path* (a real file, not a symlink) by *text*."""
    target = Path(path)
    st = target.stat()
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".gw502d",
                                dir=target.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(stat.S_IMODE(st.st_mode))
        if os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def nginx_test(files: NginxFiles, nginx: str | None = "nginx") -> str | None:
    """``nginx -t`` on the real configuration: None when it passes, else why."""
    binary = nginx_binary(nginx)
    if binary is None:
        return f"{nginx or 'nginx'} is not installed"
    failed = nginx_t(binary, files.conf, files.prefix)
    return None if failed is None else f"nginx -t fails on the changed files: {failed}"


def apply_nginx(files: NginxFiles, plan: Plan, backup_dir: str | Path, *,
                nginx: str | None = "nginx") -> Applied:
    """Check *plan* on a copy, write it, and ``nginx -t`` the result (undone if it fails).
    Reloading nginx is left to the caller."""
    return apply_plan(plan, backup_dir, before=lambda: check_nginx(files, plan, nginx=nginx),
                      after=lambda: nginx_test(files, nginx))
