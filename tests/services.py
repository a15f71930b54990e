"""Real local servers for the tests: Mosquitto and InfluxDB on private ports.

Each runs from a temporary directory as a child process, so tests never touch
a system-wide instance, and can be stopped and started again to test outages.
"""

from __future__ import annotations

import contextlib
import http.client
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, *, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s")


@dataclass
class ServiceProcess:
    """A server process with a fixed port that can be stopped and started again."""

    name: str
    argv: list[str]
    port: int
    workdir: Path
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        with (self.workdir / f"{self.name}.log").open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self.wait_ready()
        except TimeoutError:
            self.stop()
            tail = (self.workdir / f"{self.name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} did not start; log tail:\n{tail}") from None

    def wait_ready(self) -> None:
        wait_for_port(self.host, self.port)

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _require(binary: str) -> str:
    path = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None
    )
    if path is None:
        raise RuntimeError(f"{binary} is not installed; run scripts/test, which installs it")
    return path


def mosquitto_service(workdir: Path) -> ServiceProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence true\n"
        f"persistence_location {workdir}/\n"
        "max_queued_messages 100000\n"
    )
    return ServiceProcess("mosquitto", [_require("mosquitto"), "-c", str(conf)], port, workdir)


class InfluxService(ServiceProcess):
    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=1)
            try:
                conn.request("GET", "/ping")
                if conn.getresponse().status == 204:
                    return
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise TimeoutError("influxd did not answer /ping")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def influxdb_service(workdir: Path) -> InfluxService:
    workdir.mkdir(parents=True, exist_ok=True)
    port, rpc_port = free_port(), free_port()
    conf = workdir / "influxdb.conf"
    conf.write_text(
        f"""reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{workdir}/meta"
[data]
  dir = "{workdir}/data"
  wal-dir = "{workdir}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[logging]
  level = "warn"
"""
    )
    return InfluxService("influxd", [_require("influxd"), "-config", str(conf)], port, workdir)
