"""The metric names and fixed label values gw502d serves: a public interface.

The Prometheus rules, the Grafana dashboard and ``tests/test_deploy.py`` are written against
these names; renaming one breaks them.
"""

from __future__ import annotations

INCIDENTS = "gw502d_incidents_total"
REMEDIATION = "gw502d_remediation_info"
LAST_INCIDENT = "gw502d_last_incident_timestamp_seconds"
COMPANION_LINES = "gw502d_companion_lines_total"
ROOT_CAUSES = "gw502d_root_causes_total"
UPSTREAM_INCIDENTS = "gw502d_upstream_incidents_total"
UPSTREAM_REMEDIATION = "gw502d_upstream_remediation_info"
SERVER_CONFIG_PROBLEMS = "gw502d_server_config_problems"
LOG_LINES = "gw502d_log_lines_total"
LOG_BYTES = "gw502d_log_bytes_total"
LOG_OFFSET = "gw502d_log_offset_bytes"
LOG_SIZE = "gw502d_log_size_bytes"
LOG_LAG = "gw502d_log_lag_bytes"
LOG_ROTATIONS = "gw502d_log_rotations_total"
LOG_TRUNCATIONS = "gw502d_log_truncations_total"
LOG_LONG_LINES = "gw502d_log_long_lines_total"
LOG_READ_ERRORS = "gw502d_log_read_errors_total"
LOG_OPEN_FILES = "gw502d_log_open_files"
LOG_FILES = "gw502d_log_files"
LOG_SKIPPED_FILES = "gw502d_log_skipped_files"
LOG_LOST_BYTES = "gw502d_log_lost_bytes_total"
LOGS_FOLLOWED = "gw502d_logs_followed"
LOGS_CONFIGURED = "gw502d_logs_configured"
UNPARSED_LINES = "gw502d_unparsed_lines_total"
JOURNAL_RECORDS = "gw502d_journal_records_total"
JOURNAL_BYTES = "gw502d_journal_bytes_total"
JOURNAL_LONG_LINES = "gw502d_journal_long_lines_total"
JOURNAL_RESTARTS = "gw502d_journal_restarts_total"
JOURNAL_ERRORS = "gw502d_journal_errors_total"
JOURNAL_VACUUMED = "gw502d_journal_vacuumed_total"
JOURNAL_LAST_RECORD = "gw502d_journal_last_record_timestamp_seconds"
JOURNALS_FOLLOWED = "gw502d_journals_followed"
JOURNALS_CONFIGURED = "gw502d_journals_configured"
RELOAD_SUCCESSFUL = "gw502d_config_last_reload_successful"
RELOAD_TIMESTAMP = "gw502d_config_last_reload_success_timestamp_seconds"
BUILD_INFO = "gw502d_build_info"

# One series per [[journal]] source (label ``log``): none without journal sources.
PER_JOURNAL: frozenset[str] = frozenset({
    JOURNAL_RECORDS, JOURNAL_BYTES, JOURNAL_LONG_LINES, JOURNAL_RESTARTS, JOURNAL_ERRORS,
    JOURNAL_VACUUMED, JOURNAL_LAST_RECORD,
})

METRIC_NAMES: frozenset[str] = frozenset({
    INCIDENTS, REMEDIATION, LAST_INCIDENT, COMPANION_LINES, ROOT_CAUSES,
    UPSTREAM_INCIDENTS, UPSTREAM_REMEDIATION, SERVER_CONFIG_PROBLEMS,
    LOG_LINES, LOG_BYTES, LOG_OFFSET, LOG_SIZE, LOG_LAG, LOG_ROTATIONS, LOG_TRUNCATIONS,
    LOG_LONG_LINES, LOG_READ_ERRORS, LOG_OPEN_FILES, LOG_FILES, LOG_SKIPPED_FILES,
    LOG_LOST_BYTES, LOGS_FOLLOWED, LOGS_CONFIGURED,
    UNPARSED_LINES, *PER_JOURNAL, JOURNALS_FOLLOWED, JOURNALS_CONFIGURED,
    RELOAD_SUCCESSFUL, RELOAD_TIMESTAMP, BUILD_INFO,
})
