"""gw502d: why nginx said 502/504, read from nginx, uWSGI, gunicorn and werkzeug logs.

The flow is visible in the package layout: ``source`` (follow files) -> ``parse`` (one
module per log family) -> ``classify`` (the catalog compiled into one matcher, counted in
a tally) -> ``remediate`` (the fix for this host) -> ``report`` (offline scans).
"""

__version__ = "0.1.0"
