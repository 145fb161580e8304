"""What users run: the sdist, the wheel built from it, pipx, and the README's first command.

The editable checkout the other tests import once hid a wheel without its catalog; here
gw502d is built and installed as users get it, into fresh virtual environments made with
Debian's own ``/usr/bin/python3``, and every check runs the installed ``gw502d`` binary.
Expected numbers come from the repository's ``patterns/`` read with tomllib, not from the
code under test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon import DaemonProcess, append, config_text, free_port, incidents, log_paths

ROOT = Path(__file__).resolve().parent.parent
DEBIAN_PYTHON = "/usr/bin/python3"
# Debian's python3 and nothing of the developer's: no pyenv shims, no venv on the PATH.
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _run(*argv: str | Path, cwd: Path | None = None, timeout: float = 600,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def _ok(*argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = _run(*argv, cwd=cwd, env=env)
    assert result.returncode == 0, (f"{argv} exited {result.returncode}:\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def _catalog() -> tuple[int, int, list[tuple[str, str, str]]]:
    """(incident entries, example lines, real example lines as (family, line, incident))."""
    entries = examples = 0
    real = []
    for path in sorted((ROOT / "patterns").glob("*.toml")):
        doc = tomllib.loads(path.read_text())
        for incident in doc.get("incident", []):
            entries += 1
            for ex in incident.get("example", []):
                examples += 1
                companion = incident.get("companion") or "companion_of" in incident
                if ex["origin"].startswith("real:") and not companion:
                    real.append((doc["family"], ex["line"], ex.get("incident", incident["id"])))
        examples += len(doc.get("benign", []))
    return entries, examples, real


def _clean_copy(dest: Path) -> Path:
    """The checkout's files as a clone has them (tracked, plus new files not ignored)."""
    files = _ok("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                cwd=ROOT).split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel built from the unpacked sdist)."""
    work = tmp_path_factory.mktemp("build")
    src = _clean_copy(work / "src")
    dist = work / "dist"
    _ok(sys.executable, "-m", "build", "--sdist", "--outdir", dist, src)
    (sdist,) = dist.glob("gw502d-*.tar.gz")
    # GNU tar, not tarfile: Debian 12's Python 3.11.2 has no extraction filters yet, and tar
    # refuses members that climb out of the directory
    (work / "unpacked").mkdir()
    _ok("tar", "-xzf", sdist, "-C", work / "unpacked")
    (unpacked,) = (work / "unpacked").iterdir()
    _ok(sys.executable, "-m", "build", "--wheel", "--outdir", dist, unpacked)
    (wheel,) = dist.glob("gw502d-*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def installed(built: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv of Debian's python3 with the wheel installed; its bin directory."""
    venv = tmp_path_factory.mktemp("venv") / "gw502d"
    _ok(DEBIAN_PYTHON, "-m", "venv", venv)
    _ok(venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", built[1])
    return venv / "bin"


def test_sdist_and_wheel_carry_every_package_and_the_catalog(built: tuple[Path, Path]) -> None:
    sdist, wheel = built
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    with zipfile.ZipFile(wheel) as whl:
        in_wheel = set(whl.namelist())
    patterns = sorted(p.name for p in (ROOT / "patterns").glob("*.toml"))
    assert patterns
    for name in patterns:
        assert f"patterns/{name}" in in_sdist
        assert f"gw502d/catalog/{name}" in in_wheel
    packages = (ROOT / "gw502d").rglob("__init__.py")
    for package in sorted(str(p.parent.relative_to(ROOT)) for p in packages):
        assert f"{package}/__init__.py" in in_wheel, f"{package} missing from the wheel"
    assert "gw502d/py.typed" in in_wheel


def test_installed_wheel_lists_and_tests_the_whole_catalog(installed: Path) -> None:
    entries, examples, _ = _catalog()
    listed = _ok(installed / "gw502d", "patterns", "list").splitlines()
    assert len(listed) == entries
    out = _ok(installed / "gw502d", "patterns", "test")
    assert out.splitlines()[-1] == f"{examples} passed, 0 failed"


def test_installed_wheel_scans_real_lines(installed: Path, tmp_path: Path) -> None:
    _, _, real = _catalog()
    by_family: dict[str, list[tuple[str, str]]] = {}
    for family, line, incident in real:
        by_family.setdefault(family, []).append((line, incident))
    for family, cases in by_family.items():
        log = tmp_path / f"{family}.log"
        log.write_text("".join(line + "\n" for line, _ in cases))
        summary = json.loads(_ok(installed / "gw502d", "scan", "--format", "json", log))
        for _, incident in cases:
            assert summary["counts"][incident][family] >= 1, (family, incident)
        assert sum(n for sources in summary["counts"].values() for n in sources.values()) \
            == sum(1 for _, incident in cases if incident)


def test_installed_daemon_counts_a_followed_line(installed: Path, tmp_path: Path) -> None:
    _, _, real = _catalog()
    family, line, incident = next(r for r in real if r[0] == "nginx")
    logs = log_paths(tmp_path, ("nginx",))
    with DaemonProcess(tmp_path, config_text(logs), command=(str(installed / "gw502d"),)) as d:
        d.start()
        append(logs["nginx"], [line])
        d.wait_for(lambda: incidents(d.metrics()).get((incident, family)) == 1,
                   f"{incident} counted on /metrics")
        assert d.stop() == 0


def test_without_its_catalog_every_classifying_command_fails_loudly(
        installed: Path, tmp_path: Path) -> None:
    venv = tmp_path / "broken"
    shutil.copytree(installed.parent, venv, symlinks=True)
    (catalog,) = venv.glob("lib/python3*/site-packages/gw502d/catalog")
    for toml in catalog.glob("*.toml"):
        toml.unlink()
    gw502d = venv / "bin" / "python3"
    log = tmp_path / "x.log"
    log.write_text("x\n")
    config = tmp_path / "c.toml"
    config.write_text(config_text({"nginx": log}))
    for args in (["scan", str(log)], ["explain", "x"], ["patterns", "list"],
                 ["patterns", "test"], ["check-config", str(config)],
                 ["run", "--config", str(config), "--listen", f"127.0.0.1:{free_port()}"]):
        # not from the checkout: ``-m`` would import gw502d from the working directory
        result = _run(gw502d, "-m", "gw502d", *args, cwd=tmp_path, timeout=60)
        assert result.returncode != 0, args
        said = (result.stderr + result.stdout).strip().splitlines()
        assert any(str(catalog) in line for line in said), (args, said)


def test_pipx_install_gives_the_whole_catalog(tmp_path: Path) -> None:
    pipx = shutil.which("pipx")
    assert pipx is not None, "pipx is not installed: apt-get install pipx"
    src = _clean_copy(tmp_path / "src")
    env = {"PATH": DEBIAN_PATH, "HOME": str(tmp_path), "PIPX_HOME": str(tmp_path / "pipx"),
           "PIPX_BIN_DIR": str(tmp_path / "bin")}
    _ok(pipx, "install", src, env=env)
    entries, _, _ = _catalog()
    assert len(_ok(tmp_path / "bin" / "gw502d", "patterns", "list").splitlines()) == entries


def _readme_install_command() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.DOTALL)
    assert block is not None, "README starts with a sh block of two commands"
    commands = [line for line in block.group(1).splitlines()
                if line.strip() and not line.startswith("#")]
    assert len(commands) == 2 and commands[1] == "bash tests/run.sh", commands
    return commands[0]


@pytest.fixture
def nginx_error_log() -> Iterator[Path]:
    """/var/log/nginx/error.log, the daemon's default, made if missing and removed after."""
    path = Path("/var/log/nginx/error.log")
    made = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    state = Path("/var/lib/gw502d")
    state_made = not state.exists()
    yield path
    if made:
        path.unlink(missing_ok=True)
    if state_made:
        shutil.rmtree(state, ignore_errors=True)


def test_readme_first_command_on_debian_python(tmp_path: Path, nginx_error_log: Path) -> None:
    """Verbatim, as root, with Debian's python3: it installs, runs, and counts a real line."""
    assert os.geteuid() == 0, "the README's first command is for root"
    command = _readme_install_command()
    listen = re.search(r"--listen (127\.0\.0\.1:\d+)", command)
    assert listen is not None, command
    url = f"http://{listen.group(1)}"
    src = _clean_copy(tmp_path / "src")
    out = tmp_path / "out.txt"
    with out.open("wb") as sink:
        proc = subprocess.Popen(["bash", "-c", command], cwd=src, stdout=sink,
                                stderr=subprocess.STDOUT, env={"PATH": DEBIAN_PATH,
                                                               "HOME": str(tmp_path)},
                                start_new_session=True)
    try:
        family, line, incident = next(r for r in _catalog()[2] if r[0] == "nginx")
        _wait(lambda: _get(url + "/healthz") == 200, 600, proc, out, "/healthz 200")
        append(nginx_error_log, [line])
        want = f'gw502d_incidents_total{{incident="{incident}",source="{family}"}} 1.0'
        _wait(lambda: want in _body(url + "/metrics"), 30, proc, out, want)
    finally:
        os.killpg(proc.pid, 15)
        assert proc.wait(30) == 0, out.read_text()[-3000:]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except OSError:
        return 0


def _body(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def _wait(done: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes], out: Path,
          what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert proc.poll() is None, f"exited {proc.returncode}:\n{out.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what}:\n{out.read_text()[-3000:]}"
        time.sleep(0.2)
