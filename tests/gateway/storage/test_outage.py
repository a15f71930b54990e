"""Outage: under load, InfluxDB stops, the writer is SIGKILLed, both restart; nothing is
missing and nothing is duplicated."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.gateway.storage.conftest import influxql
from tests.gateway.storage.outage_writer import SEQS_PER_BATCH, SITE, last_seq
from tests.services import InfluxService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
DEVICES = 4


def _writer(tmp_path: Path, influxdb: InfluxService, db: str) -> subprocess.Popen[bytes]:
    with (tmp_path / "writer.log").open("ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.gateway.storage.outage_writer",
                str(tmp_path / "outbox.sqlite"),
                influxdb.url,
                db,
                str(tmp_path / "progress"),
                str(DEVICES),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _wait_progress(progress: Path, at_least: int, proc: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seq = last_seq(progress)
        if seq >= at_least:
            return seq
        if proc.poll() is not None:
            raise AssertionError(f"writer exited {proc.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"writer made no progress past {last_seq(progress)}")


def _stored(influxdb: InfluxService, db: str) -> dict[str, list[int]]:
    answer = influxql(
        influxdb.url,
        db,
        f'SELECT "seq" FROM "electricity" WHERE "site" = \'{SITE}\' GROUP BY "device"',
    )
    out: dict[str, list[int]] = {}
    for series in answer["results"][0].get("series", []):
        out[series["tags"]["device"]] = [int(v[1]) for v in series["values"]]
    return out


def test_outage_and_sigkill_lose_and_duplicate_nothing(
    tmp_path: Path, influxdb: InfluxService
) -> None:
    db = "outage"
    influxql(influxdb.url, db, f'CREATE DATABASE "{db}"')
    progress, log = tmp_path / "progress", tmp_path / "writer.log"
    first = _writer(tmp_path, influxdb, db)
    second: subprocess.Popen[bytes] | None = None
    try:
        before_outage = _wait_progress(progress, 100, first, log)
        influxdb.stop()
        # The writer keeps taking readings while InfluxDB is away...
        _wait_progress(progress, before_outage + 200, first, log)
        # ...and dies without any chance to flush.
        first.kill()
        first.wait(10)
        killed_at = last_seq(progress)
        with contextlib.closing(sqlite3.connect(tmp_path / "outbox.sqlite")) as box:
            (pending,) = box.execute("SELECT coalesce(sum(points), 0) FROM entries").fetchone()
        # Everything taken during the outage was waiting in the outbox when the writer died.
        assert pending >= 200 * DEVICES
        influxdb.start()
        second = _writer(tmp_path, influxdb, db)
        _wait_progress(progress, killed_at + 100, second, log)
        second.terminate()
        assert second.wait(40) == 0, log.read_text()[-2000:]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        influxdb.start()  # no-op when running; the fixture is shared by the session
    final = last_seq(progress)
    assert final >= killed_at + 100
    stored = _stored(influxdb, db)
    assert sorted(stored) == [f"meter-{d}" for d in range(DEVICES)]
    for device, seqs in stored.items():
        duplicates = [s for s, n in Counter(seqs).items() if n > 1]
        assert duplicates == [], f"{device}: duplicated seq {duplicates[:10]}"
        missing = sorted(set(range(final + 1)) - set(seqs))
        assert missing == [], f"{device}: {len(missing)} missing, first {missing[:10]}"
        assert len(seqs) == final + 1
    assert (final + 1) % SEQS_PER_BATCH == 0
