"""``gw502d run`` and ``gw502d check-config``.

The daemon's modules (prometheus-client, structlog, the HTTP server, the followers) are
imported by the commands that use them, so ``gw502d scan`` and ``explain`` do not pay for
them at start.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gw502d.daemon import EXIT_CONFIG, EXIT_OK
from gw502d.daemon.config import DEFAULT_PATH, Overrides
from gw502d.errors import ConfigError
from gw502d.remediate.host import ConfigPaths


def _overrides(args: argparse.Namespace) -> Overrides:
    return Overrides(
        config=getattr(args, "config", None),
        logs=tuple(getattr(args, "log", None) or ()),
        journal_units=tuple(getattr(args, "journal_unit", None) or ()),
        listen=getattr(args, "listen", None),
        state_dir=getattr(args, "state_dir", None),
        web_config=getattr(args, "web_config", None),
        pattern_dirs=tuple(Path(d) for d in args.patterns_dir or ()),
    )


def cmd_run(args: argparse.Namespace) -> int:
    import structlog  # noqa: PLC0415 - see above

    from gw502d.daemon import logging as daemon_logging  # noqa: PLC0415
    from gw502d.daemon.service import Daemon, load  # noqa: PLC0415

    daemon_logging.configure()
    overrides = _overrides(args)
    try:
        loaded = load(overrides)
    except ConfigError as exc:
        structlog.get_logger("gw502d.daemon").error("configuration not loaded", error=str(exc))
        return EXIT_CONFIG
    return Daemon(overrides, loaded).run()


def cmd_check_config(args: argparse.Namespace) -> int:
    from gw502d.daemon.service import load  # noqa: PLC0415 - see above
    from gw502d.source.journal import check as journal_problem  # noqa: PLC0415
    from gw502d.source.journal import describe  # noqa: PLC0415

    try:
        loaded = load(_overrides(args))
    except ConfigError as exc:
        print(f"gw502d check-config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    config = loaded.config
    tls = "TLS" if loaded.web is not None and loaded.web.tls is not None else "plain HTTP"
    users = len(loaded.web.users) if loaded.web is not None else 0
    journals = f", {len(config.journals)} journal source(s)" if config.journals else ""
    print(f"{config.source}: OK: {len(config.logs)} log(s){journals}, "
          f"{len(loaded.catalog.keys)} incident types, listen {config.listen} ({tls}, "
          f"{users} basic-auth user(s)), state in {config.state_dir}")
    for spec in config.logs:
        form = ", syslog prefixes" if spec.format == "syslog" else ""
        print(f"  log {spec.name!r}: {spec.path} ({spec.family or 'any family'}{form})")
        problem = spec.problem()
        if problem is not None:
            print(f"gw502d check-config: warning: log {spec.name!r}: {spec.path}: {problem}",
                  file=sys.stderr)
    for journal in config.journals:
        print(f"  journal {journal.name!r}: {describe(journal)} "
              f"({journal.family or 'family from each entry'})")
        problem = journal_problem(journal)
        if problem is not None:
            print(f"gw502d check-config: warning: journal {journal.name!r}: {problem}",
                  file=sys.stderr)
    _check_servers(config.servers)
    return EXIT_OK


def _check_servers(paths: ConfigPaths) -> None:
    """What of the servers' configuration is read, and what cannot be (a warning each)."""
    from gw502d.remediate.configured import HostConfig  # noqa: PLC0415 - see above

    servers = HostConfig.read(paths)
    for line in servers.summary():
        print(f"  {line}")
    for server, problem in servers.problems:
        print(f"gw502d check-config: warning: {server} configuration: {problem}",
              file=sys.stderr)


def add_daemon_commands(
        subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``run`` and ``check-config`` to the ``gw502d`` parser's subcommands."""
    p = subparsers.add_parser("run", help="follow logs and serve Prometheus metrics (the daemon)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help=f"TOML configuration (default: {DEFAULT_PATH}, if it exists)")
    p.add_argument("--log", action="append", metavar="PATH",
                   help="follow this log (a glob too) instead of the [[log]] tables; repeatable")
    p.add_argument("--journal-unit", action="append", metavar="UNIT",
                   help="follow this systemd unit's journal entries instead of the [[journal]] "
                        "tables; repeatable")
    p.add_argument("--listen", metavar="HOST:PORT", help="HTTP address (default :9502)")
    p.add_argument("--state-dir", type=Path, metavar="DIR", help="where offsets are kept")
    p.add_argument("--web-config", type=Path, metavar="FILE",
                   help="TLS and basic auth, exporter-toolkit format")
    p.set_defaults(func=cmd_run)
    c = subparsers.add_parser("check-config", help="validate a configuration without starting")
    c.add_argument("config", type=Path, metavar="FILE")
    c.set_defaults(func=cmd_check_config)
