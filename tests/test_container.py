"""The container image, built from the Dockerfile with Debian's podman and run as users run it.

No registry is reachable from CI, so the base is made here: ``mmdebstrap`` installs Debian
bookworm with python3 from the Debian mirror into a tarball cached in ``CACHE`` (made again
when its recipe changes or it is a week old), ``podman import`` turns it into an image, and
the build gets it as ``--build-arg PYTHON_IMAGE``. The Dockerfile's default stays the public
``python:3.11-slim-bookworm``.

What this kind of machine needs, learned the hard way (the first two are set in the test's
own ``containers.conf``, which ``CONTAINERS_CONF`` points to):

- crun refuses hybrid cgroups (v1 with a v2 mount): the runtime is runc;
- podman's default ulimits exceed the host's hard limits: nofile and nproc are set lower;
- netavark's bridge needs iptables, which is not there: the build uses the host network
  and the container slirp4netns, which publishes on 127.0.0.1 without touching the host's
  firewall;
- without systemd, podman cannot add the timer that runs the HEALTHCHECK every 30 s and
  logs so ("unable to get systemd connection"); ``podman healthcheck run`` still works.

The build reaches PyPI with the host's pip settings (index, CA bundle): they are passed as
build secrets, which are mounted for one step and never stored in a layer; the test reads
every layer of the image to prove it. Needs root and the Debian packages podman, runc,
mmdebstrap, slirp4netns (a missing one fails the test with the install hint).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon import CLASSIFIER
from tests.servers.harness import free_port
from tests.servers.journal import JournalWriter, real_lines

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
PATTERNS = ROOT / "patterns"
CACHE = Path("/var/cache/gw502d-test/debian-base")
CACHE_MAX_AGE = 7 * 24 * 3600  # a week of Debian security updates at most

SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# The smallest base the Dockerfile works on: apt (the image installs systemd for
# journalctl), passwd (useradd), python3 and python3-venv. Merged /usr like Debian's own
# images; no docs, man pages, translations, like debian:bookworm-slim.
MMDEBSTRAP_OPTIONS = (
    "--variant=apt",
    "--include=passwd,python3,python3-venv",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    '--aptopt=Acquire::Languages "none"',
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
)
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
# What a layer of the image must not hold: build secrets, the build context, the wheels.
FORBIDDEN_IN_IMAGE = re.compile(r"(^|/)(pip\.conf|pip-ca\.crt)$|^(src|wheels|run/secrets)/")
UID = 10001
PORT = 9502
# The image's own budget on top of its base: the venv (~8 MB) and systemd (~17 MB).
MAX_ADDED_BYTES = 60_000_000
# Lines of podman's output quoted when a command fails.
TAIL = 120

TIMINGS: dict[str, float] = {}


# --- podman -----------------------------------------------------------------


def _tool(name: str, package: str) -> str:
    """Path of a command; fails (never skips) with the install hint when it is missing."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: apt-get install {package}")
    return found


class Podman:
    """podman with the test's containers.conf; a failed command fails with its output."""

    def __init__(self, conf: Path) -> None:
        self.binary = _tool("podman", "podman")
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def run(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.binary, *args]
        try:
            result = subprocess.run(
                cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{' '.join(cmd)}: no answer after {timeout} s\n{_tail(exc.stdout)}")
        if check and result.returncode != 0:
            pytest.fail(
                f"{' '.join(cmd)} exited {result.returncode}\n"
                f"--- stdout\n{_tail(result.stdout)}\n--- stderr\n{_tail(result.stderr)}"
            )
        return result

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        (data,) = json.loads(self.run(kind, "inspect", name).stdout)
        return dict(data)


def _tail(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join((text or "").splitlines()[-TAIL:])


def _timed(name: str, started: float) -> None:
    TIMINGS[name] = time.monotonic() - started


# --- the base image -----------------------------------------------------------


def _base_tarball() -> Path:
    """The cached mmdebstrap tarball, made when missing, stale or of another recipe."""
    _tool("mmdebstrap", "mmdebstrap")
    recipe = json.dumps([SUITE, MMDEBSTRAP_OPTIONS, MIRRORS]).encode()
    tarball = CACHE / f"{SUITE}-{hashlib.sha256(recipe).hexdigest()[:12]}.tar"
    if tarball.exists() and time.time() - tarball.stat().st_mtime < CACHE_MAX_AGE:
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob(f"{SUITE}-*.tar"):
        old.unlink()
    partial = CACHE / f"partial-{os.getpid()}-{tarball.name}"  # mmdebstrap wants .tar
    cmd = ["mmdebstrap", *MMDEBSTRAP_OPTIONS, SUITE, str(partial), *MIRRORS]
    started = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, check=False)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        pytest.fail(f"{' '.join(cmd)} exited {result.returncode}\n{_tail(result.stderr)}")
    _timed("mmdebstrap (cold)", started)
    partial.replace(tarball)  # atomic: a parallel run sees all of it or nothing
    return tarball


# --- pip settings for the build -------------------------------------------------


def _secret_targets() -> dict[str, str]:
    """Build secret id -> where the Dockerfile mounts it."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    return dict(re.findall(r"--mount=type=secret,id=([\w.-]+),target=([^\s\\]+)", text))


def _host_pip_settings() -> dict[str, str]:
    """The host's effective pip settings (files and PIP_* variables) that matter for reaching
    an index: ``pip config list`` prints ``section.key='value'``; variables win over a
    ``[wheel]`` section, which wins over ``[global]``, as in pip."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    by_key: dict[str, dict[str, str]] = {}
    for line in listed.splitlines():
        name, _, value = line.partition("=")
        section, _, key = name.rpartition(".")
        by_key.setdefault(key, {})[section] = ast.literal_eval(value)
    settings = {}
    for key in ("index-url", "extra-index-url", "trusted-host", "proxy", "cert"):
        sections = by_key.get(key, {})
        value = sections.get(":env:") or sections.get("wheel") or sections.get("global")
        if value:
            settings[key] = value
    return settings


def _pip_secrets(workdir: Path, marker: str) -> list[str]:
    """``--secret`` arguments giving the build the host's way to PyPI.

    Index URLs on the host's disk (file://, a path) mean nothing in a container and are
    left out; the CA bundle is a secret of its own that the pip.conf points to. The marker,
    a comment in the pip.conf, lets the layer check find a copy of it anywhere.
    """
    targets = _secret_targets()
    host = _host_pip_settings()
    lines = [f"# {marker}", "[global]"]
    for key in ("index-url", "extra-index-url"):
        urls = [u for u in host.get(key, "").split() if u.startswith(("https://", "http://"))]
        if urls:
            lines.append(f"{key} = {' '.join(urls)}")
    lines += [f"{key} = {host[key]}" for key in ("trusted-host", "proxy") if key in host]
    args = []
    if "cert" in host:
        lines.append(f"cert = {targets['pip-ca.crt']}")
        args += ["--secret", f"id=pip-ca.crt,src={host['cert']}"]
    conf = workdir / "pip.conf"
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [*args, "--secret", f"id=pip.conf,src={conf}"]


# --- fixtures -------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    podman: Podman
    image: str
    base: str
    marker: str


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """The image, built from the checkout on a fresh Debian base; removed afterwards with
    the base image (the cached tarball stays)."""
    if os.geteuid() != 0:
        pytest.fail("the container test needs root: it runs podman rootful and mmdebstrap")
    _tool("runc", "runc")
    _tool("slirp4netns", "slirp4netns")
    workdir = tmp_path_factory.mktemp("container")
    conf = workdir / "containers.conf"
    conf.write_text(CONTAINERS_CONF, encoding="utf-8")
    podman = Podman(conf)
    name = f"gw502d-test-{os.getpid()}-{secrets.token_hex(3)}"
    base, image = f"localhost/{name}-base:{SUITE}", f"localhost/{name}:test"
    marker = f"gw502d build secret {secrets.token_hex(8)}"

    tarball = _base_tarball()
    try:
        started = time.monotonic()
        # PATH as Debian's own images set it.
        podman.run("import", "--quiet", "--change", f"ENV PATH={BASE_PATH}", str(tarball), base,
                   timeout=300)
        _timed("base import", started)
        started = time.monotonic()
        # --layers=false: nothing cached is left behind (the base is new every run anyway);
        # --format docker: OCI images have no HEALTHCHECK.
        podman.run(
            "build", "--pull=never", "--layers=false", "--force-rm", "--format", "docker",
            "--network", "host", "--build-arg", f"PYTHON_IMAGE={base}",
            *_pip_secrets(workdir, marker), "--tag", image, str(ROOT),
            timeout=1200,
        )
        _timed("build", started)
        yield Built(podman, image, base, marker)
    finally:
        for ref in (image, base):
            podman.run("rmi", "--force", ref, check=False)
        print("\ncontainer timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMINGS.items()))


# --- the image ------------------------------------------------------------------


def test_image_metadata_and_size(built: Built) -> None:
    image = built.podman.inspect("image", built.image)
    config = image["Config"]
    assert config["User"].split(":")[0] == str(UID), config["User"]
    assert config["Entrypoint"] == ["gw502d"]
    health = image["Healthcheck"]
    assert health and health["Test"][0] == "CMD", health
    assert "/healthz" in " ".join(config["Env"]), config["Env"]

    size = image["Size"]
    base_size = built.podman.inspect("image", built.base)["Size"]
    print(f"\nimage {size / 1e6:.1f} MB, base {base_size / 1e6:.1f} MB")
    assert size - base_size < MAX_ADDED_BYTES, (
        f"the image adds {(size - base_size) / 1e6:.1f} MB to its base: apt lists, a cache "
        "or the wheels left in a layer?"
    )


def test_no_layer_holds_build_secrets_or_context(built: Built, tmp_path: Path) -> None:
    """Every file of every layer, read from ``podman save``: no pip.conf, no CA bundle
    copy, no build context or wheels; the pip.conf's marker in no file and no history."""
    history = built.podman.run("history", "--no-trunc", built.image).stdout
    assert built.marker not in history
    saved = tmp_path / "image"
    built.podman.run("save", "--format", "oci-dir", "--output", str(saved), built.image)
    marker = built.marker.encode()
    layers = 0
    for blob in sorted((saved / "blobs" / "sha256").iterdir()):
        try:
            layer = tarfile.open(blob, mode="r:*")
        except tarfile.ReadError:
            continue  # the manifest and the config are JSON
        layers += 1
        with layer:
            for member in layer:
                path = member.name.removeprefix("./")
                assert not FORBIDDEN_IN_IMAGE.search(path), f"{path} is in a layer"
                data = layer.extractfile(member) if member.isfile() else None
                if data is not None:
                    assert marker not in data.read(), f"{path} holds the build's pip.conf"
    assert layers >= 2, f"only {layers} layers found in {saved}"


def _catalog_from_files() -> tuple[set[tuple[str, str]], int]:
    """(source, id) of every incident and the number of example lines, read from
    patterns/*.toml directly."""
    incidents, examples = set(), 0
    for path in sorted(PATTERNS.glob("*.toml")):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        for incident in data["incident"]:
            incidents.add((data["family"], incident.get("id", incident.get("companion_of"))))
            examples += len(incident.get("example", []))
        examples += len(data.get("benign", []))
    return incidents, examples


def test_catalog_in_image(built: Built) -> None:
    """The whole catalog is in the image and every example line passes there."""
    incidents, examples = _catalog_from_files()
    run = ("run", "--rm", "--network=none", "--read-only", "--cap-drop=ALL", built.image)
    listed = built.podman.run(*run, "patterns", "list").stdout
    assert {tuple(line.split()[:2]) for line in listed.splitlines()} == incidents, listed
    tested = built.podman.run(*run, "patterns", "test").stdout
    assert tested.splitlines()[-1] == f"{examples} passed, 0 failed", tested


def test_image_has_journalctl(built: Built) -> None:
    """journalctl, to read a host journal mounted read-only (issue 16)."""
    result = built.podman.run(
        "run", "--rm", "--network=none", "--entrypoint", "journalctl", built.image, "--version"
    )
    assert result.stdout.startswith("systemd "), result.stdout


# --- running it -------------------------------------------------------------------


def _real_nginx_example() -> tuple[str, str]:
    """(incident id, line) of the first nginx example a real nginx wrote."""
    data = tomllib.loads((PATTERNS / "nginx.toml").read_text(encoding="utf-8"))
    for incident in data["incident"]:
        for example in incident.get("example", []):
            if example["origin"].startswith("real:"):
                return incident["id"], example["line"]
    pytest.fail("patterns/nginx.toml has no example with a real: origin")


def _sample(port: int, name: str, labels: dict[str, str]) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def _wait_sample(
    podman: Podman, container: str, port: int, name: str, labels: dict[str, str], value: float
) -> None:
    deadline = time.monotonic() + 60
    seen: float | None | str = None
    while time.monotonic() < deadline:
        try:
            seen = _sample(port, name, labels)
        except OSError as exc:
            seen = repr(exc)
        if seen == value:
            return
        time.sleep(0.2)
    logs = podman.run("logs", container, check=False)
    pytest.fail(
        f"{name}{labels} is {seen}, not {value}, after 60 s\n"
        f"--- podman logs\n{_tail(logs.stdout)}\n{_tail(logs.stderr)}"
    )


def _proc_status(podman: Podman, container: str) -> dict[str, str]:
    """PID 1's /proc status: what the daemon really runs as, not what the image says."""
    text = podman.run("exec", container, "cat", "/proc/1/status").stdout
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def test_container_counts_a_real_incident(built: Built, tmp_path: Path) -> None:
    """The image's own command and example config, read-only, no capabilities, a log
    directory mounted read-only: a real nginx line appended to the log is counted on
    /metrics, the health check passes, and SIGTERM ends it with exit 0."""
    podman = built.podman
    logs = tmp_path / "nginx"
    logs.mkdir()
    logs.chmod(0o755)  # uid 10001 reads it through the bind mount
    error_log = logs / "error.log"
    error_log.touch(mode=0o644)
    incident, line = _real_nginx_example()
    port = free_port()
    container = built.image.removeprefix("localhost/").replace(":", "-")
    podman.run(
        "run", "--detach", "--name", container, "--network", "slirp4netns",
        "--publish", f"127.0.0.1:{port}:{PORT}", "--read-only", "--cap-drop=ALL",
        "--security-opt", "no-new-privileges", "--volume", f"{logs}:/var/log/nginx:ro",
        built.image,
    )
    try:
        started = time.monotonic()
        # start_at = "end": only what is appended once the file is followed counts.
        _wait_sample(podman, container, port, "gw502d_log_open_files", {"log": "nginx"}, 1.0)
        with error_log.open("a", encoding="utf-8") as log:
            log.write(line + "\n")
        _wait_sample(
            podman, container, port, "gw502d_incidents_total",
            {"incident": incident, "source": "nginx"}, 1.0,
        )

        health = podman.run("healthcheck", "run", container, check=False)
        assert health.returncode == 0, f"unhealthy: {health.stdout}{health.stderr}"
        state = podman.inspect("container", container)
        assert state["State"]["Health"]["Status"] == "healthy", state["State"]["Health"]
        assert state["HostConfig"]["ReadonlyRootfs"] is True
        status = _proc_status(podman, container)
        assert status["Uid"].split() == [str(UID)] * 4, status["Uid"]
        assert int(status["CapEff"], 16) == 0, status["CapEff"]
        assert status["NoNewPrivs"] == "1", status["NoNewPrivs"]

        podman.run("kill", "--signal", "TERM", container)
        exit_code = podman.run("wait", container, timeout=60).stdout.strip()
        _timed("run", started)
        output = podman.run("logs", container).stdout
        assert exit_code == "0", f"exit {exit_code} after SIGTERM\n{_tail(output)}"
        events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        assert events[-1]["event"] == "stopped", _tail(output)
    finally:
        podman.run("rm", "--force", "--volumes", container, check=False)


def test_container_reads_a_host_journal_mounted_read_only(built: Built, tmp_path: Path) -> None:
    """A journal directory mounted read-only where the node's would be (as the DaemonSet
    mounts it) and a [[journal]] without a directory: the image's journalctl, run by the
    daemon as uid 10001 on a read-only root, reads it, and a uWSGI unit's real line
    appended to it is counted."""
    podman = built.podman
    journal = tmp_path / "journal"
    journal.mkdir()
    w = JournalWriter(journal / "system.journal")
    w.append([w.entry("before start", unit="cron.service")])
    config = tmp_path / "config"
    config.mkdir()
    (config / "gw502d.toml").write_text(
        'state_dir = "/var/lib/gw502d"\n[[journal]]\nunits = ["shop.service"]\nname = "shop"\n')
    for path in (tmp_path, journal, config):
        path.chmod(0o755)  # uid 10001 reads them through the bind mounts
    for f in journal.iterdir():
        f.chmod(0o644)  # on a host: the systemd-journal group, or adm by ACL
    line = next(ln for ln in real_lines("uwsgi") if "invalid request block size" in ln)
    port = free_port()
    container = built.image.removeprefix("localhost/").replace(":", "-") + "-journal"
    podman.run(
        "run", "--detach", "--name", container, "--network", "slirp4netns",
        "--publish", f"127.0.0.1:{port}:{PORT}", "--read-only", "--cap-drop=ALL",
        "--security-opt", "no-new-privileges", "--volume", f"{journal}:/var/log/journal:ro",
        "--volume", f"{config}:/etc/gw502d:ro", built.image,
    )
    try:
        _wait_sample(podman, container, port, "gw502d_journals_followed", {}, 1.0)
        w.append([w.entry(line, unit="shop.service", ident="uwsgi")])
        incident = CLASSIFIER.classify(line.encode())
        assert incident is not None
        _wait_sample(podman, container, port, "gw502d_incidents_total",
                     {"incident": incident.incident.id, "source": "uwsgi"}, 1.0)
        _wait_sample(podman, container, port, "gw502d_journal_records_total", {"log": "shop"},
                     1.0)
    finally:
        podman.run("rm", "--force", "--volumes", container, check=False)
