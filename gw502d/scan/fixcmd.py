"""``gw502d fix``: the change to this host's configuration that the incidents in some logs
call for, as a unified diff the servers accept; ``--apply`` writes it.

stdout holds the diff only (``gw502d fix ... > fix.diff``; ``patch -p1 -d /`` applies it);
what each change does and why, and anything that stops the fix, go to stderr. Exit
statuses (:data:`EXIT_FIXED` ...) are in README.md. The modules that read and check
configuration are imported by the command itself, so other commands do not load them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gw502d.classify.catalog import load_catalog
from gw502d.remediate.correlate import DEFAULT_WINDOW
from gw502d.remediate.host import DEFAULT_NGINX_CONF, ConfigPaths

EXIT_FIXED, EXIT_NOTHING, EXIT_INPUT, EXIT_REFUSED, EXIT_NOT_APPLIED = 0, 1, 2, 3, 4


def default_backup_dir() -> Path:
    """/var/backups/gw502d for root, else under the XDG state dir."""
    if os.geteuid() == 0:
        return Path("/var/backups/gw502d")
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "gw502d" / "backups"


def _say(*lines: str) -> None:
    for text in lines:
        print(text, file=sys.stderr)


def cmd_fix(args: argparse.Namespace) -> int:
    from gw502d.remediate.configured import HostConfig  # noqa: PLC0415 - see above
    from gw502d.remediate.fixplan import apply_fix, plan_fix  # noqa: PLC0415
    from gw502d.scan.fix import (  # noqa: PLC0415
        FetchError,
        advise_found,
        incident_files,
        scan_for_fix,
    )

    if not args.logs and not args.incidents:
        _say("gw502d fix: give log files, or --from a daemon's /incidents URL")
        return EXIT_INPUT
    catalog = load_catalog(args.patterns_dir or ())
    try:
        with incident_files(args.incidents or []) as extra:
            result, routes = scan_for_fix(catalog, [*args.logs, *extra], args.window)
    except FetchError as e:
        _say(f"gw502d fix: cannot read incidents: {e}")
        return EXIT_INPUT
    if result.errors:
        _say(*(f"gw502d fix: {error}" for error in result.errors),
             "gw502d fix: not every input was read: nothing is proposed")
        return EXIT_INPUT
    paths = ConfigPaths(nginx=args.nginx_conf or None, uwsgi=tuple(args.uwsgi_config or ()),
                        gunicorn=tuple(args.gunicorn_config or ()),
                        gunicorn_commands=tuple(args.gunicorn_command or ()),
                        cwd=str(Path.cwd()), nginx_dump=True)
    conf = HostConfig.read(paths)
    _say(*(f"gw502d fix: {server} configuration: {problem}" for server, problem in conf.problems))
    found = advise_found(catalog, result, routes, conf)
    fix = plan_fix([c for f in found for c in f.advice.changes])
    kept = set(fix.sentences)
    dropped = {c.sentence for f in found for c in f.advice.changes} - kept
    for f in found:
        via = f" via {f.upstream}" if f.upstream is not None else ""
        _say(f"{f.incident.id} ({f.incident.source}){via}: {f.lines} line(s)")
        _say(*(f"  {sentence}" for sentence in f.advice.sentences or (f.advice.text,)
               if sentence not in dropped))
    if not fix.changes:
        _say("gw502d fix: nothing here that a change of the configuration read fixes")
        return EXIT_NOTHING
    if fix.problems:
        _say(*(f"gw502d fix: not changed: {reason}" for reason in fix.problems),
             "gw502d fix: the changes belong together: none is proposed")
        return EXIT_REFUSED
    sys.stdout.write(fix.diff)
    sys.stdout.flush()
    if not args.apply:
        _say("gw502d fix: checked (nginx -t, uWSGI); nothing written: --apply writes it")
        return EXIT_FIXED
    applied = apply_fix(fix, args.backup_dir)
    if not applied.ok:
        _say(f"gw502d fix: not applied: {applied.reason}")
        return EXIT_NOT_APPLIED
    _say(f"gw502d fix: written: {', '.join(applied.written)}; backups: "
         f"{', '.join(applied.backups)}")
    for step in fix.steps:
        then = "reload it" if step.server == "nginx" else "restart it (options are read at start)"
        _say(f"gw502d fix: {step.server} ({step.name}): {then}")
    return EXIT_FIXED


def add_fix_command(
        subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fix`` to the ``gw502d`` parser's subcommands."""
    p = subparsers.add_parser(
        "fix", help="the configuration change the incidents in logs call for, as a checked "
        "diff (--apply writes it)")
    p.add_argument("--nginx-conf", default=DEFAULT_NGINX_CONF, metavar="FILE",
                   help=f"nginx.conf (default {DEFAULT_NGINX_CONF}; \"\" not to read nginx's)")
    p.add_argument("--uwsgi-config", action="append", metavar="FILE",
                   help="a uWSGI ini/yaml/xml (file.ini:section), or a glob; repeatable")
    p.add_argument("--gunicorn-config", action="append", metavar="FILE",
                   help="a gunicorn.conf.py; repeatable")
    p.add_argument("--gunicorn-command", action="append", metavar="COMMAND",
                   help="gunicorn's command line (its -c file is read too); repeatable")
    p.add_argument("--from", dest="incidents", action="append", metavar="URL",
                   help="a running gw502d's /incidents (http://HOST:9502/incidents); repeatable")
    p.add_argument("--apply", action="store_true",
                   help="write the change (after nginx -t and uWSGI accepted it on copies)")
    p.add_argument("--backup-dir", type=Path, default=default_backup_dir(), metavar="DIR",
                   help="where --apply keeps the files it replaces (default: %(default)s)")
    p.add_argument("--correlation-window", dest="window", type=float, default=DEFAULT_WINDOW,
                   metavar="SECONDS", help="how close in time a backend event must be to "
                   "explain an nginx one")
    p.add_argument("logs", nargs="*", metavar="LOG", help="log files, directories, .gz, or -")
    p.set_defaults(func=cmd_fix)
