#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian 12 machine, then run them.
# Real servers come from Debian (nginx, uWSGI, Prometheus/promtool, systemd-analyze,
# journal files, rsyslog, podman, and chromium with its driver for the page's browser tests)
# and PyPI (gunicorn, Flask, other server versions, Selenium); every test binds 127.0.0.1
# only. The tests run on Debian's own python3, in a virtual environment
# (PEP 668 keeps pip out of the system one) that gets gw502d built and installed as users get
# it, not in editable mode. Extra arguments go to pytest.
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
  python3 python3-venv python3-dev gcc libc6-dev pipx \
  nginx-light uwsgi-core uwsgi-plugin-python3 prometheus mtail \
  systemd systemd-journal-remote rsyslog \
  podman runc mmdebstrap slirp4netns stress-ng chromium chromium-driver >/dev/null

venv="${GW502D_TEST_VENV:-.venv}"
/usr/bin/python3 -m venv "$venv"
"$venv/bin/python3" -m pip install -q --disable-pip-version-check '.[test]'
# shellcheck disable=SC1091 # created just above
. "$venv/bin/activate"
python3 -m ruff check gw502d tests bench
python3 -m mypy
# Build the extra server versions once (cached; prints what each cost, 0.0 s when cached).
python3 -m tests.servers.versions
python3 -m pytest "$@"
