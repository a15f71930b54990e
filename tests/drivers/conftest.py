"""Fixtures for the driver tests: socat pty pairs and a reading collector."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.reading import Reading


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two connected pseudo-terminals made by socat: a null-modem cable for RTU."""
    socat = shutil.which("socat")
    if socat is None:
        raise RuntimeError("socat is not installed; run scripts/test, which installs it")
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not (a.exists() and b.exists()):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("socat did not create the pty pair")
        time.sleep(0.02)
    yield str(a), str(b)
    proc.terminate()
    proc.wait(timeout=5)


class Collector:
    """The sink: keeps every reading."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    def __call__(self, reading: Reading) -> None:
        self.readings.append(reading)

    def of(self, device_id: str) -> list[Reading]:
        return [r for r in self.readings if r.device_id == device_id]


@pytest.fixture
def collector() -> Collector:
    return Collector()
