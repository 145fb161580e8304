"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon import DaemonProcess


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def make(config: str, **kwargs: Any) -> DaemonProcess:
        d = DaemonProcess(tmp_path, config, **kwargs)
        started.append(d)
        return d

    yield make
    for d in started:
        d.kill()
