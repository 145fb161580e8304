"""``gw502d run``: the follower thread, the journal followers, the HTTP server, signals and
systemd, tied together.

The main thread only waits: for a signal (SIGHUP reloads, SIGTERM/SIGINT stop), for the
follower's thread to end, and for the next watchdog ping; every few seconds it stats the
servers' configuration files (nginx, uWSGI, gunicorn) and reads them again when one
changed, outside the follower's thread. Python runs signal handlers in
the main thread between bytecodes, so the handlers only set a flag and wake it.

Lifecycle, as systemd sees it (``Type=notify``): ``READY=1`` once the listener is bound
and the follower loop runs; ``RELOADING=1`` then ``READY=1`` around a reload;
``WATCHDOG=1`` every WatchdogSec/2 while the follower loop is alive, so a stuck follower
gets restarted; ``STOPPING=1`` before the final snapshot.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from types import FrameType

import structlog

from gw502d import __version__
from gw502d.classify.catalog import Catalog, CatalogError, load_catalog
from gw502d.daemon import EXIT_FAILED, EXIT_OK
from gw502d.daemon.config import Config, Overrides, check_families, load_config
from gw502d.daemon.journals import SNAPSHOT_KEY, Journals
from gw502d.daemon.notify import Notifier, watchdog_interval
from gw502d.daemon.pipeline import Pipeline, Settings
from gw502d.daemon.totals import Totals
from gw502d.errors import ConfigError
from gw502d.export.collector import Scrape, build_registry, followed
from gw502d.export.hosts import HostPolicy
from gw502d.export.http import Exporter, Site
from gw502d.export.incidents import Entry, IncidentQuery
from gw502d.export.page import render_page
from gw502d.export.page_model import Reading, RunState, evidence_upstreams, page_model
from gw502d.export.webconfig import WebConfig, load_web_config
from gw502d.remediate.configured import HostConfig
from gw502d.remediate.host import ConfigPaths
from gw502d.source.follower import Follower
from gw502d.source.spec import JournalSpec, LogSpec

log = structlog.get_logger("gw502d.daemon")

_STARTUP_POLL = 0.05
_IDLE_POLL = 1.0
_SERVERS_POLL = 5.0  # seconds between stats of the servers' configuration files
# Settings the running daemon cannot change: the listener, the offsets' home and the
# follower's reading are set up once.
_RESTART_ONLY = ("listen", "state_dir", "max_line_bytes", "start_at")


@dataclass(frozen=True, slots=True)
class Loaded:
    """A configuration with everything it names loaded and checked."""

    config: Config
    catalog: Catalog
    web: WebConfig | None


def load(overrides: Overrides, previous_web: WebConfig | None = None) -> Loaded:
    """Config file, flags, pattern dirs and web config; ConfigError names what is wrong.

    *previous_web*: the running web config, on a reload (it may not lose TLS or users
    without saying so)."""
    config = load_config(overrides)
    try:
        catalog = load_catalog(config.pattern_dirs)
    except CatalogError as exc:
        raise ConfigError("pattern_dirs", str(exc), config.source) from exc
    check_families(config, [f.name for f in catalog.families])
    web = load_web_config(config.web_config, previous_web)
    return Loaded(config, catalog, web)


def _settings(config: Config) -> Settings:
    return Settings(incidents_buffer=config.incidents_buffer, redact=config.redact,
                    window=config.correlation_window_seconds)


class Daemon:
    """One run of ``gw502d run``, from start to the final snapshot."""

    def __init__(self, overrides: Overrides, loaded: Loaded) -> None:
        self._overrides = overrides
        self._loaded = loaded
        self._notifier = Notifier()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._reload = False
        self._terminate = False
        self._follower_failed = False
        self._reload_ok = True
        self._reload_time = self._started = time.time()
        config = loaded.config
        self.follower = Follower(config.logs, self._feed, state_dir=config.state_dir,
                                 start_at=config.start_at, max_line=config.max_line_bytes,
                                 snapshot_extra=self._snapshot)
        self.journals = Journals(config.journals, self._records,
                                 saved=self.follower.restored_extra.get(SNAPSHOT_KEY),
                                 start_at=config.start_at, max_line=config.max_line_bytes)
        totals = Totals()
        totals.restore(self.follower.restored_extra, loaded.catalog)
        self.pipeline = Pipeline(loaded.catalog, [*config.logs, *config.journals],
                                 _settings(config), totals)
        self.site = Site(build_registry(self._scrape), health=self._health,
                         incidents=self._incidents, page=self._page, web=loaded.web,
                         hosts=HostPolicy(config.allowed_hosts))
        self.servers = self._read_servers(config.servers, "start")

    # -- what the follower calls (its thread) ---------------------------------------------

    def _feed(self, spec: LogSpec, path: str, lines: list[bytes]) -> None:
        self.pipeline.feed(spec, path, lines)

    def _records(self, spec: JournalSpec, lines: list[bytes], times: list[float],
                 tags: list[str]) -> None:  # a journal follower's thread, its lock held
        self.pipeline.feed_records(spec, lines, times, tags)

    def _snapshot(self) -> dict[str, object]:
        with self.journals.frozen() as cursors:  # journal locks first, then the pipeline's
            extra = self.pipeline.snapshot()
        extra[SNAPSHOT_KEY] = cursors
        return extra

    # -- what the endpoints read ---------------------------------------------------------

    def _scrape(self) -> Scrape:
        return Scrape(self.pipeline.numbers(), self.follower.stats(), self._reload_ok,
                      self._reload_time, self.servers.problem_counts(), self.journals.stats(),
                      self.journals.followed())

    def _health(self) -> str | None:
        """Why the daemon cannot do its job now, or None: a 503 with this reason."""
        if self._follower_failed:
            return "follower failed: see the log"
        if not self.follower.alive:
            return "follower not running (starting, stopping or stuck)"
        if self.follower.saving_fails:
            return ("cannot save state (disk full or read-only?): a restart would count lines "
                    "again; see the log")
        if not self.pipeline.stages.catalog.keys:
            return "the incident catalog is empty: nothing can be counted"
        journals = self.journals.problems()
        if journals:
            return "; ".join(f"journal source {name!r} cannot be followed: {problem}"
                             for name, problem in journals.items())
        if not followed(self.follower.stats()) and not self.journals.followed():
            paths = ", ".join(s.path for s in self._loaded.config.logs)
            if not paths:  # journal sources only, none read from yet
                return "no journal source is being followed yet (journalctl starting)"
            return f"no configured log is being followed (missing or unreadable: {paths})"
        return None

    def _incidents(self, query: IncidentQuery) -> Iterator[Entry]:
        return self.pipeline.stages.recent.select(query, redact=self._loaded.config.redact)

    def _page(self, nonce: str) -> str:
        numbers, stats, problem = self.pipeline.numbers(), self.follower.stats(), self._health()
        run = RunState(self._started, self._reload_ok, self._reload_time,
                       self._loaded.config.source, problem)
        with self.pipeline.lock:  # the tallies' facts and the rates change with each block
            s = self.pipeline.stages
            upstreams = evidence_upstreams(s.tallies, s.root_causes.correlator, numbers)
            model = page_model(Reading(s.catalog, numbers, s.rates, upstreams, time.time()),
                               self._loaded.config.logs, stats, run)
        return render_page(model, nonce)

    # -- the run -------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the exit status."""
        config = self._loaded.config
        try:
            exporter = Exporter(config.listen, self.site)
        except OSError as exc:
            log.error("cannot listen", listen=str(config.listen), error=exc.strerror or str(exc))
            return EXIT_FAILED
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        exporter.start()
        follower = threading.Thread(target=self._follow, name="follower")
        follower.start()
        self.journals.start()
        log.info("started", version=__version__, config=config.source, listen=str(config.listen),
                 port=exporter.port, logs=[s.path for s in config.logs],
                 journals=[s.name for s in config.journals], state_dir=str(config.state_dir))
        code = self._main_loop(follower)
        self._notifier.send("STOPPING=1")
        self.journals.stop()  # before the follower's final snapshot: their cursors are final
        self._stop.set()
        self.follower.wake()
        follower.join()
        exporter.stop()
        log.info("stopped", status=code)
        return code

    def _main_loop(self, follower: threading.Thread) -> int:
        ready = False
        ping_every = watchdog_interval()
        next_ping = 0.0
        next_stat = time.monotonic() + _SERVERS_POLL
        while True:
            self._wake.wait(_STARTUP_POLL if not ready
                            else min(ping_every or _IDLE_POLL, _SERVERS_POLL))
            self._wake.clear()
            if self._terminate:
                return EXIT_OK
            if not follower.is_alive():
                log.error("follower thread ended, stopping")
                return EXIT_FAILED
            if self._reload:
                self._reload = False
                self._do_reload()
            alive = self.follower.alive
            if not ready and alive:
                ready = True
                self._notifier.send("READY=1", "STATUS=following logs")
                log.info("ready")
            if ping_every is not None and alive and time.monotonic() >= next_ping:
                self._notifier.send("WATCHDOG=1")
                next_ping = time.monotonic() + ping_every
            if time.monotonic() >= next_stat:
                if self.servers.changed():
                    self.servers = self._read_servers(self.servers.paths, "files changed")
                next_stat = time.monotonic() + _SERVERS_POLL

    def _read_servers(self, paths: ConfigPaths, why: str) -> HostConfig:
        """Read the servers' configuration and count and advise with it; say what could
        not be read (a warning per path, every time it is read)."""
        conf = HostConfig.read(paths)
        self.pipeline.set_host(conf)
        log.info("server configuration read", why=why, read=conf.summary(),
                 problems=len(conf.problems), rate_limit=False)
        for server, problem in conf.problems:
            log.warning("server configuration not read", server=server, path=problem.path,
                        reason=problem.reason, rate_limit=False)
        return conf

    def _follow(self) -> None:
        try:
            self.follower.run(self._stop)
        except Exception:
            log.exception("follower failed")
            self._follower_failed = True
        finally:
            self._wake.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self._terminate = True
        self._wake.set()

    def _do_reload(self) -> None:
        """Load the configuration again; on any error keep the running one."""
        self._notifier.reloading()
        old = self._loaded.config
        try:
            loaded = load(self._overrides, self._loaded.web)
        except Exception as exc:  # any failure is a failed reload, never a dead main loop
            self._reload_ok = False
            error = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            log.error("reload failed, keeping the running configuration", error=error,
                      rate_limit=False)
            self._notifier.send("READY=1", "STATUS=reload failed, running the old configuration")
            return
        config = loaded.config
        for name in _RESTART_ONLY:
            if getattr(config, name) != getattr(old, name):
                log.warning("setting changes only at restart", key=name,
                            running=str(getattr(old, name)), configured=str(getattr(config, name)))
        config = replace(config, **{name: getattr(old, name) for name in _RESTART_ONLY})
        loaded = replace(loaded, config=config)
        self.pipeline.reload(loaded.catalog, [*config.logs, *config.journals],
                             _settings(config))
        self.follower.set_specs(config.logs)
        self.journals.set_specs(config.journals)
        self.site.web = loaded.web
        self.site.hosts = HostPolicy(config.allowed_hosts)
        self.servers = self._read_servers(config.servers, "reload")
        self._loaded = loaded
        self._reload_ok = True
        self._reload_time = time.time()
        log.info("reloaded", config=config.source, logs=[s.path for s in config.logs],
                 journals=[s.name for s in config.journals],
                 incident_types=len(loaded.catalog.keys), rate_limit=False)
        self._notifier.send("READY=1", "STATUS=following logs")

