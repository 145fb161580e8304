"""Scan: ``gw502d scan``, the daemon's engine over whole files, and its reports."""
