"""From located advice to one checked change of the host's files, applied whole or not at all.

The advice for several incidents may ask for the same edit (a request too big for uWSGI is
seen by nginx and by uWSGI) or for the same setting with two values (two timeouts): each
setting of each block or file is changed once, to the larger value, which keeps the order
the timeouts need. The edits are planned per file set (nginx's tree, each uWSGI config,
each gunicorn.conf.py), and judged by the real servers on copies (``nginx -t``, a uWSGI
start with the new options) before anything is written. The changes belong together (a
read timeout raised for a new harakiri), so one refusal or failed check stops all of them,
and an apply that fails half-way puts back what it wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gw502d.remediate.hostconf import (
    Applied,
    GunicornConfig,
    GunicornEdit,
    NginxConfig,
    NginxEdit,
    Plan,
    UwsgiConfig,
    UwsgiEdit,
    apply_plan,
    check_nginx,
    check_uwsgi,
    nginx_test,
    plan_gunicorn,
    plan_nginx,
    plan_uwsgi,
)
from gw502d.remediate.hostconf.apply import replace_file
from gw502d.remediate.located import Change
from gw502d.remediate.nginx import parse_size, parse_time

Check = Callable[[], str | None]


@dataclass(frozen=True, slots=True)
class Step:
    """The plan for one file set, what to run before writing it and after, and which
    server reads it (to say what to reload)."""

    server: str
    name: str
    plan: Plan
    before: Check
    after: Check


@dataclass
class Fix:
    """The changes kept, their sentences, the steps, and why the fix cannot be made (then
    nothing is printed or written)."""

    changes: list[Change] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def diff(self) -> str:
        return "".join(s.plan.diff for s in self.steps)

    @property
    def sentences(self) -> list[str]:
        return list(dict.fromkeys(c.sentence for c in self.changes))


def _edit_key(change: Change) -> tuple[object, ...]:
    """What one edit sets: the same key twice is one setting asked for twice."""
    e = change.edit
    if isinstance(e, NginxEdit):
        return (id(change.target), id(e.block), e.directive, e.instead_of)
    if isinstance(e, UwsgiEdit):
        return (id(change.target), e.option, e.instead_of)
    return (id(change.target), e.setting)


def _magnitude(change: Change) -> float | None:
    """An edit's value as a number (seconds, bytes, a count) to compare two asked for."""
    value = change.edit.value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    words = str(value).split()
    if not words:
        return None
    last = words[-1]
    found = parse_time(last) if last[-1] in "smhdwMy" else parse_size(last)
    return float(found) if found is not None else None


def merge(changes: Iterable[Change]) -> list[Change]:
    """Each setting once: the larger value where two are asked for, else the first."""
    kept: dict[tuple[object, ...], Change] = {}
    for change in changes:
        key = _edit_key(change)
        old = kept.get(key)
        if old is None:
            kept[key] = change
            continue
        new_size, old_size = _magnitude(change), _magnitude(old)
        if new_size is not None and old_size is not None and new_size > old_size:
            kept[key] = change
    return list(kept.values())


def plan_fix(changes: Iterable[Change], *, nginx: str = "nginx", uwsgi: str = "uwsgi") -> Fix:
    """Plan and check *changes*; ``problems`` says why the fix cannot be made."""
    fix = Fix(merge(changes))
    groups: dict[int, list[Change]] = {}
    for change in fix.changes:
        groups.setdefault(id(change.target), []).append(change)
    for group in groups.values():
        target = group[0].target
        step = _step(target, [c.edit for c in group], nginx, uwsgi)
        fix.problems += step.plan.refused
        if step.plan.changes:
            fix.steps.append(step)
    if not fix.problems:
        for step in fix.steps:
            failed = step.before()
            if failed is not None:
                fix.problems.append(f"{step.name}: {failed}")
    return fix


def _step(target: NginxConfig | UwsgiConfig | GunicornConfig,
          edits: Sequence[NginxEdit | UwsgiEdit | GunicornEdit], nginx: str,
          uwsgi: str) -> Step:
    if isinstance(target, NginxConfig):
        plan = plan_nginx(target, [e for e in edits if isinstance(e, NginxEdit)])
        files = target.files
        return Step("nginx", files.conf, plan,
                    lambda: check_nginx(files, plan, nginx=nginx),
                    lambda: nginx_test(files, nginx))
    if isinstance(target, UwsgiConfig):
        options = [e for e in edits if isinstance(e, UwsgiEdit)]
        plan = plan_uwsgi(target, options)
        plugins = target.plugins
        return Step("uwsgi", target.main or "uWSGI", plan,
                    lambda: check_uwsgi([(e.option, e.value) for e in options], plugins,
                                        uwsgi=uwsgi),
                    lambda: None)
    plan = plan_gunicorn(target, [e for e in edits if isinstance(e, GunicornEdit)])
    return Step("gunicorn", target.config_file or "gunicorn", plan, lambda: None, lambda: None)


def apply_fix(fix: Fix, backup_dir: str | Path) -> Applied:
    """Write every step (its check passed in :func:`plan_fix`); if one fails, put back the
    ones written before it. Backups stay in *backup_dir*."""
    if fix.problems or not fix.steps:
        return Applied(False, "; ".join(fix.problems) or "nothing to change")
    done: list[Step] = []
    written: list[str] = []
    backups: list[str] = []
    for step in fix.steps:
        result = apply_plan(step.plan, backup_dir, after=step.after)
        backups += result.backups
        if not result.ok:
            for undo in reversed(done):
                for change in undo.plan.changes:
                    replace_file(change.real, change.old)
            return Applied(False, f"{step.name}: {result.reason}; nothing changed", (),
                           tuple(backups))
        done.append(step)
        written += result.written
    return Applied(True, "", tuple(written), tuple(backups))
