"""Export: what the daemon serves over HTTP (Prometheus metrics, recent incidents, a page).

Numbers are read when asked: :mod:`collector` turns the daemon's plain counters into metric
families at scrape time, so the per-line path never touches prometheus-client.
"""
