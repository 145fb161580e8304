"""Daemon: ``gw502d run`` — follow the logs, count incidents, serve them to Prometheus.

:mod:`config` reads the TOML file and flags, :mod:`counters` keeps the numbers the
follower's lines add up to, :mod:`service` runs the threads, signals and systemd's
notifications, :mod:`cli` adds ``run`` and ``check-config`` to the command line.
"""

# Exit statuses of ``gw502d run`` and ``check-config`` (2 as for an unreadable input).
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
