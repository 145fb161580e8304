"""Server versions the harness runs: Debian's packages and extra ones from PyPI in venvs.

Why: the catalog must recognise what each current version of a server writes, and a line
typed from one version's source is only a claim about the next. Debian ships one uWSGI and
one nginx; PyPI has other uWSGI (built from source by pip, with python3-dev and gcc),
gunicorn and Werkzeug releases. Each extra version lives in its own virtual environment
under CACHE (``/var/cache/gw502d-test`` unless ``GW502D_TEST_CACHE`` says otherwise), built
once under a lock; a second run finds it ready. ``python3 -m tests.servers.versions`` builds
them all and prints what each cost.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

CACHE = Path(os.environ.get("GW502D_TEST_CACHE", "/var/cache/gw502d-test"))
DEBIAN_PYTHON = "/usr/bin/python3"  # Debian's uWSGI plugin and python3-dev are for this one


@dataclass(frozen=True)
class Version:
    """One server build: its name in `real:` origins and how to run it.

    `pip` is empty for what is already installed (Debian's packages, the test
    environment's own gunicorn/Flask); otherwise the requirements of its venv.
    """

    server: str  # "uWSGI", "gunicorn", "Werkzeug", "nginx"
    version: str
    pip: tuple[str, ...] = ()
    python: str = sys.executable

    @property
    def label(self) -> str:
        """How `real:` origins name it, e.g. "uWSGI 2.0.31"."""
        return f"{self.server} {self.version}"

    @property
    def venv(self) -> Path | None:
        return CACHE / f"{self.server.lower()}-{self.version}" if self.pip else None

    def bin(self, name: str) -> str:
        """Path of an executable of this version's venv (or of the test environment)."""
        if self.venv is None:
            return shutil.which(name) or str(Path(sys.executable).parent / name)
        return str(self.venv / "bin" / name)

    def interpreter(self) -> str:
        """The Python that runs this version (its venv's, or the tests' own)."""
        return self.bin("python") if self.venv is not None else sys.executable

    def ensure(self) -> float:
        """Build the venv if it is not there yet; return the seconds it took (0 if cached)."""
        venv = self.venv
        if venv is None:
            return 0.0
        ready = venv / ".ready"
        if ready.exists():
            return 0.0
        CACHE.mkdir(parents=True, exist_ok=True)
        with (CACHE / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be building it
            if ready.exists():
                return 0.0
            t0 = time.monotonic()
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([self.python, "-m", "venv", str(venv)], check=True, timeout=300)
            subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                 "--disable-pip-version-check", "--no-cache-dir", *self.pip],
                check=True, timeout=900,
            )
            ready.write_text(f"{self.label}\n")
            return time.monotonic() - t0


def _debian_version(package: str) -> str:
    """The upstream version of an installed Debian package, e.g. "2.0.21" for uwsgi-core."""
    res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], check=False,
                         capture_output=True, text=True, timeout=30)
    return res.stdout.split("-")[0].split("+")[0] or "unknown"


def _installed(dist: str) -> str:
    return metadata.version(dist)


UWSGI_DEBIAN = Version("uWSGI", _debian_version("uwsgi-core"))
UWSGI_PYPI = Version("uWSGI", "2.0.31", ("uwsgi==2.0.31",), python=DEBIAN_PYTHON)
GUNICORN_CURRENT = Version("gunicorn", _installed("gunicorn"))
GUNICORN_20 = Version("gunicorn", "20.1.0", ("gunicorn==20.1.0",))
GUNICORN_23 = Version("gunicorn", "23.0.0", ("gunicorn==23.0.0",))
WERKZEUG_CURRENT = Version("Werkzeug", _installed("werkzeug"))
WERKZEUG_2 = Version("Werkzeug", "2.3.8", ("werkzeug==2.3.8", "flask==2.3.3"))
NGINX_DEBIAN = Version("nginx", _debian_version("nginx-light") if shutil.which("dpkg-query")
                       else "unknown")

UWSGI_VERSIONS = (UWSGI_DEBIAN, UWSGI_PYPI)
GUNICORN_VERSIONS = (GUNICORN_CURRENT, GUNICORN_23, GUNICORN_20)
WERKZEUG_VERSIONS = (WERKZEUG_CURRENT, WERKZEUG_2)
EXTRA = tuple(v for v in (*UWSGI_VERSIONS, *GUNICORN_VERSIONS, *WERKZEUG_VERSIONS) if v.pip)


def main() -> int:
    """Build every extra version; print the cost of each (0.0 s when cached)."""
    total = 0.0
    for v in EXTRA:
        spent = v.ensure()
        total += spent
        print(f"{v.label:20} {spent:7.1f} s  {v.venv}", flush=True)
    print(f"{'total':20} {total:7.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
