#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run them.
# Real servers come from Debian (nginx, uWSGI, Prometheus/promtool, systemd-analyze) and
# PyPI (gunicorn, Flask; and other versions in venvs under /var/cache/gw502d-test: uWSGI
# 2.0.31 built from source, gunicorn 20.1/23.0, Werkzeug 2.3); every test binds 127.0.0.1
# only. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive

# Keep package scripts from starting system services (nginx on :80, prometheus on :9090):
# the tests start their own instances on free ports and stop them by PID.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  trap '$SUDO rm -f "$policy"' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  nginx-light uwsgi-core uwsgi-plugin-python3 prometheus systemd \
  python3-venv python3-dev gcc libc6-dev >/dev/null

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
python3 -m ruff check gw502d tests bench
python3 -m mypy
# Build the extra server versions once (cached; prints what each cost, 0.0 s when cached).
python3 -m tests.servers.versions
python3 -m pytest "$@"
