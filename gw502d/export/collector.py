"""The Prometheus collector: metric families built at scrape time from plain numbers.

The per-line path adds to ints in lists (see :mod:`gw502d.daemon.counters`); a scrape asks
for a copy of them once and turns it into ``CounterMetricFamily`` / ``GaugeMetricFamily``
values here. Labels are the fixed catalog (incident, source, cause), the names of the
configured logs and the remediation text: never a value a client chose (URI, Host,
client address), so the number of series cannot grow with traffic.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from gw502d import __version__
from gw502d.classify.keys import Key
from gw502d.export import metric_names as m
from gw502d.source.follower import LogStats
from gw502d.source.journal import JournalStats


@dataclass(frozen=True, slots=True)
class Numbers:
    """The incident numbers of one scrape: copies, consistent with each other."""

    incidents: dict[Key, int]
    companions: dict[Key, int]
    last_seen: dict[Key, float]
    remediation: dict[Key, str]
    root_causes: dict[tuple[str, str], int]
    unparsed: dict[str, int]
    # per (incident, source, upstream label): counts (every label of the config at 0 or
    # more) and the remediation of those seen
    upstream_incidents: dict[tuple[str, str, str], int] = field(default_factory=dict)
    upstream_remediation: dict[tuple[str, str, str], str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scrape:
    """Everything one scrape exports."""

    numbers: Numbers
    logs: dict[str, LogStats]
    reload_successful: bool
    reload_success_time: float
    # what of the servers' configuration could not be read, per server (nginx, uwsgi, ...)
    server_config_problems: dict[str, int] = field(default_factory=dict)
    journals: dict[str, JournalStats] = field(default_factory=dict)
    journals_followed: int = 0


# (metric, help, LogStats field) of the per-log families.
_LOG_COUNTERS = (
    (m.LOG_LINES, "Complete lines read from the log's files", "lines"),
    (m.LOG_BYTES, "Bytes read from the log's files", "bytes"),
    (m.LOG_ROTATIONS, "Rotations seen (the path names another file, or is gone)",
     "rotations"),
    (m.LOG_TRUNCATIONS, "Truncations seen (copytruncate, or a file rewritten in place)",
     "truncations"),
    (m.LOG_LONG_LINES, "Lines longer than max_line_bytes, counted cut to it", "long_lines"),
    (m.LOG_READ_ERRORS, "Failed opens, stats and reads, missing files included",
     "read_errors"),
    (m.LOG_LOST_BYTES, "Bytes that could not be read: truncated away unread, or in a rotated "
     "file gone or compressed before it was read", "lost_bytes"),
)
# (metric, help, JournalStats field) of the per-journal-source families.
_JOURNAL_COUNTERS = (
    (m.JOURNAL_RECORDS, "Journal entries journalctl gave for the source (filtered by its "
     "matches; those without a message too)", "records"),
    (m.JOURNAL_BYTES, "Bytes of the messages read from the source's entries", "bytes"),
    (m.JOURNAL_LONG_LINES, "Message lines longer than max_line_bytes, counted cut to it",
     "long_lines"),
    (m.JOURNAL_RESTARTS, "Times journalctl exited or was killed and was started again",
     "restarts"),
    (m.JOURNAL_ERRORS, "Entries not understood, failed starts and exits of journalctl",
     "errors"),
    (m.JOURNAL_VACUUMED, "Starts whose saved cursor's entry was gone (vacuumed: entries since "
     "then lost; read again from its time)", "vacuumed"),
)
_LOG_GAUGES = (
    (m.LOG_OFFSET, "Bytes read so far of the files at the log's path(s)", "offset"),
    (m.LOG_SIZE, "Size of the files at the log's path(s)", "size"),
    (m.LOG_OPEN_FILES, "Files open for the log, rotated ones still drained included",
     "open_files"),
    (m.LOG_FILES, "Files followed for the log (open, or closed while idle past the open-file "
     "bound), rotated ones still drained included", "files"),
    (m.LOG_SKIPPED_FILES, "Paths the log names that are not followed (not regular files, "
     "compressed)", "skipped_files"),
)


class Gw502dCollector:
    """Yields gw502d's metric families from *scrape*, called once per collection."""

    def __init__(self, scrape: Callable[[], Scrape]) -> None:
        self._scrape = scrape
        self._build = InfoMetricFamily(m.BUILD_INFO.removesuffix("_info"),
                                       "gw502d's version and the Python running it",
                                       value={"version": __version__,
                                              "python": platform.python_version()})

    def collect(self) -> Iterator[Metric]:
        """Every gw502d family, from one consistent read of the numbers."""
        s = self._scrape()
        yield from _incident_families(s.numbers)
        yield from _log_families(s.logs, s.numbers.unparsed, s.journals)
        yield from _journal_families(s.journals, s.journals_followed)
        problems = GaugeMetricFamily(m.SERVER_CONFIG_PROBLEMS, "Files, paths and settings of "
                                     "the servers' configuration that could not be read",
                                     labels=["server"])
        for server, n in s.server_config_problems.items():
            problems.add_metric([server], n)
        yield problems
        yield GaugeMetricFamily(m.RELOAD_SUCCESSFUL,
                                "Whether the last configuration load (start or SIGHUP) worked",
                                value=int(s.reload_successful))
        yield GaugeMetricFamily(m.RELOAD_TIMESTAMP,
                                "When the configuration was last loaded successfully",
                                value=s.reload_success_time)
        yield self._build


Labels = TypeVar("Labels", bound=tuple[str, ...])


def _counter(name: str, doc: str, labels: list[str],
             values: Mapping[Labels, float]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(key, value)
    return family


def _info(name: str, doc: str, labels: list[str],
          texts: Mapping[Labels, str]) -> InfoMetricFamily:
    family = InfoMetricFamily(name.removesuffix("_info"), doc, labels=labels)
    for key, text in texts.items():
        family.add_metric(key, {"remediation": text})
    return family


def _incident_families(n: Numbers) -> Iterator[Metric]:
    pair = ["incident", "source"]
    yield _counter(m.INCIDENTS, "Incident lines, per catalog incident and the log family that "
                   "wrote it", pair, n.incidents)
    yield _info(m.REMEDIATION, "What to change on this host, filled with the most common "
                "evidence seen", pair, n.remediation)
    last = GaugeMetricFamily(m.LAST_INCIDENT, "When an incident line was last read (0: never)",
                             labels=pair)
    for key, when in n.last_seen.items():
        last.add_metric(key, when)
    yield last
    yield _counter(m.COMPANION_LINES, "Lines that accompany an incident already counted (e.g. "
                   "uWSGI's SIGPIPE line)", pair, n.companions)
    yield _counter(m.ROOT_CAUSES, "nginx incidents correlated with an application-side cause",
                   ["incident", "cause"], n.root_causes)
    triple = [*pair, "upstream"]
    yield _counter(m.UPSTREAM_INCIDENTS, "Incident lines of nginx per upstream (a peer nginx's "
                   "configuration passes to, else other)", triple, n.upstream_incidents)
    yield _info(m.UPSTREAM_REMEDIATION, "What to change on this host for the incidents of one "
                "upstream", triple, n.upstream_remediation)


def _log_families(logs: dict[str, LogStats], unparsed: dict[str, int],
                  journals: Iterable[str]) -> Iterator[Metric]:
    for name, doc, attr in _LOG_COUNTERS:
        family = CounterMetricFamily(name, doc, labels=["log"])
        for log, stats in logs.items():
            family.add_metric([log], getattr(stats, attr))
        yield family
    for name, doc, attr in _LOG_GAUGES:
        gauge = GaugeMetricFamily(name, doc, labels=["log"])
        for log, stats in logs.items():
            gauge.add_metric([log], getattr(stats, attr))
        yield gauge
    lag = GaugeMetricFamily(m.LOG_LAG, "Bytes written to the log but not read yet",
                            labels=["log"])
    unparsed_lines = CounterMetricFamily(m.UNPARSED_LINES, "Lines without the record structure of "
                                 "the log's family (wrong family or log format)",
                                 labels=["log"])
    for log, stats in logs.items():
        lag.add_metric([log], max(stats.size - stats.offset, 0))
    for log in [*logs, *journals]:  # a journal source's lines have a family's shape too
        unparsed_lines.add_metric([log], unparsed.get(log, 0))
    yield lag
    yield unparsed_lines
    yield GaugeMetricFamily(m.LOGS_CONFIGURED, "Logs in the configuration ([[log]] tables)",
                            value=len(logs))
    yield GaugeMetricFamily(m.LOGS_FOLLOWED, "Configured logs with a file open now; fewer than "
                            "configured means logs missing or unreadable",
                            value=followed(logs))


def _journal_families(journals: dict[str, JournalStats], followed: int) -> Iterator[Metric]:
    for name, doc, attr in _JOURNAL_COUNTERS:
        family = CounterMetricFamily(name, doc, labels=["log"])
        for log, stats in journals.items():
            family.add_metric([log], getattr(stats, attr))
        yield family
    last = GaugeMetricFamily(m.JOURNAL_LAST_RECORD, "The journal time of the last entry read "
                             "(__REALTIME_TIMESTAMP; 0: none yet)", labels=["log"])
    for log, stats in journals.items():
        last.add_metric([log], stats.last_record_timestamp)
    yield last
    yield GaugeMetricFamily(m.JOURNALS_CONFIGURED, "Journal sources in the configuration "
                            "([[journal]] tables, --journal-unit)", value=len(journals))
    yield GaugeMetricFamily(m.JOURNALS_FOLLOWED, "Journal sources with journalctl running and "
                            "no problem; fewer than configured: see /healthz", value=followed)


def followed(logs: dict[str, LogStats]) -> int:
    """How many configured logs have a file followed (a log being rotated counts)."""
    return sum(1 for stats in logs.values() if stats.files)


def build_registry(scrape: Callable[[], Scrape]) -> CollectorRegistry:
    """A registry of gw502d's collector plus prometheus-client's process and Python ones."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(Gw502dCollector(scrape))
    return registry
