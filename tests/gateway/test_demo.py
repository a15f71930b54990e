"""Smoke test: `meterwatch demo` comes up, answers /health, guards its API, stops cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _get(url: str, *, key: str | None = None) -> tuple[int, dict[str, object] | list[object]]:
    req = urllib.request.Request(url)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_demo_serves_health_and_api_then_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "demo",
            "--port",
            "0",
            "--history-days",
            "1",
            "--no-status",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    url = key = None
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and (url is None or key is None):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if m := re.search(r"dashboard and API: (http://127\.0\.0\.1:\d+)/", line):
                url = m.group(1)
            if m := re.search(r"API key \(admin, shown once\): (\S+)", line):
                key = m.group(1)
        assert url is not None, "".join(lines)
        assert key is not None

        status, health = _get(f"{url}/health")
        assert status == 200
        assert isinstance(health, dict)
        assert health["status"] in {"ok", "degraded"}
        assert key not in json.dumps(health)

        assert _get(f"{url}/api/v1/devices")[0] == 401
        assert _get(f"{url}/api/v1/devices", key="mw_wrong")[0] == 401

        # The drivers poll the simulators: every Modbus device comes up.
        devices: list[object] = []
        for _ in range(60):
            status, body = _get(f"{url}/api/v1/devices", key=key)
            assert status == 200
            assert isinstance(body, list)
            devices = body
            modbus_up = [d for d in devices if isinstance(d, dict) and d["state"] == "up"]
            if len(modbus_up) >= 15:
                break
            time.sleep(1)
        assert len(devices) >= 15
        assert len([d for d in devices if isinstance(d, dict) and d["state"] == "up"]) >= 15

        # The replayed day earns the alerts the scenario's ground truth predicts.
        status, alerts = _get(f"{url}/api/v1/alerts?limit=100", key=key)
        assert status == 200
        assert isinstance(alerts, dict)
        items = alerts["items"]
        assert isinstance(items, list)
        by_device = {a["device"]: a for a in items}
        assert "water-2" in by_device  # mounted backwards: reverse flow

        # Its evidence bundle verifies with the script shipped inside it, stand-alone.
        req = urllib.request.Request(
            f"{url}/api/v1/alerts/{by_device['water-2']['id']}/evidence",
            headers={"Authorization": f"Bearer {key}"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            bundle = tmp_path / "bundle.zip"
            bundle.write_bytes(resp.read())
        with zipfile.ZipFile(bundle) as zf:
            script = next(n for n in zf.namelist() if n.endswith("verify_bundle.py"))
            zf.extract(script, tmp_path / "x")
        check = subprocess.run(
            [sys.executable, "-I", "-S", str(tmp_path / "x" / script), str(bundle)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        lines.append(out or "")
    assert proc.returncode == 0, "".join(lines)[-3000:]
