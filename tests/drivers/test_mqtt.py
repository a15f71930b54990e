"""MQTT subscription against a real Mosquitto, fed by mosquitto_pub."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from drivers.bus import run_bus
from drivers.links import MqttLink, SubscribedDevice
from drivers.profiles import load_profile
from drivers.reading import DeviceKind, Quality
from drivers.status import BusStatus, DeviceState
from tests.drivers.conftest import Collector
from tests.services import ServiceProcess, free_port

pytestmark = pytest.mark.integration

PLUG = SubscribedDevice("plug-1", load_profile("tasmota_energy"), "plug1")
SHELLY = SubscribedDevice("shelly-1", load_profile("shelly_em"), "shellypro-a1")
WATER = SubscribedDevice(
    "water-9", load_profile("json_generic", kind=DeviceKind.WATER), "site/water/9"
)
DEVICES = [PLUG, SHELLY, WATER]


async def _pub(
    broker: ServiceProcess, topic: str, payload: str, *, qos: int = 1,
    extra: tuple[str, ...] = (),
) -> None:
    exe = shutil.which("mosquitto_pub")
    assert exe, "mosquitto_pub is not installed"
    proc = await asyncio.create_subprocess_exec(
        exe, "-h", broker.host, "-p", str(broker.port), "-q", str(qos), "-t", topic,
        "-m", payload, *extra,
    )
    assert await proc.wait() == 0


async def _until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll `cond` (set by the driver's callbacks, which offer no event to wait on)."""
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _subscribed(link: MqttLink, sink: Collector) -> AsyncIterator[BusStatus]:
    status = BusStatus()
    task = asyncio.create_task(run_bus(link, DEVICES, sink, status=status))
    try:
        await _until(lambda: status.connected)
        await asyncio.sleep(0.3)  # let SUBACK arrive
        yield status
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_decodes_tasmota_shelly_and_json(
    mosquitto: ServiceProcess, collector: Collector, protocol: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    link = MqttLink(mosquitto.host, mosquitto.port, protocol=protocol,
                    client_id=f"mw-test-decode-{protocol}")
    caplog.set_level(logging.WARNING, logger="meterwatch.drivers.mqtt")
    async with _subscribed(link, collector) as status:
        energy = {"ENERGY": {"Total": 10.5, "Power": 120, "Voltage": 230, "Current": 0.52}}
        await _pub(mosquitto, "tele/plug1/SENSOR", json.dumps(energy))
        await _pub(mosquitto, "shellypro-a1/status/em1:0",
                   json.dumps({"id": 0, "voltage": 231.2, "act_power": 99.5, "pf": 0.9}))
        await _pub(mosquitto, "shellypro-a1/status/em1data:0",
                   json.dumps({"id": 0, "total_act_energy": 5000.0}))
        await _pub(mosquitto, "site/water/9", json.dumps({"volume_forward_m3": 77.25}))
        for bad in ("not json", '{"ENERGY": 5}', "[]"):
            await _pub(mosquitto, "tele/plug1/SENSOR", bad)
        await _pub(mosquitto, "tele/plug1/SENSOR", json.dumps(energy))
        await _pub(mosquitto, "tele/plug1/LWT", "Offline")
        await _until(lambda: len(collector.readings) >= 6)
        await _until(lambda: status.devices["plug-1"].malformed == 3)
    plug = collector.of("plug-1")
    assert [r.quality for r in plug] == [Quality.OK, Quality.OK, Quality.DISCONNECTED]
    assert plug[0].fields == {"energy_import_kwh": 10.5, "power_total_w": 120.0,
                              "voltage_l1_v": 230.0, "current_l1_a": 0.52}
    assert plug[2].fields == {}
    assert [r.seq - plug[0].seq for r in plug] == [0, 1, 2]
    shelly = collector.of("shelly-1")
    assert shelly[0].fields == {"voltage_l1_v": 231.2, "power_total_w": 99.5, "power_factor": 0.9}
    assert shelly[1].fields == {"energy_import_kwh": 5.0}
    assert collector.of("water-9")[0].fields == {"volume_forward_m3": 77.25}
    assert status.devices["plug-1"].state is DeviceState.DOWN  # reported Offline
    assert status.devices["water-9"].state is DeviceState.UP
    malformed_logs = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(malformed_logs) == 1  # three malformed messages, one log line


async def test_persistent_session_delivers_what_was_published_while_away(
    mosquitto: ServiceProcess, collector: Collector,
) -> None:
    link = MqttLink(mosquitto.host, mosquitto.port, protocol="5", client_id="mw-test-persist")
    async with _subscribed(link, collector):
        pass  # registers the session and its subscriptions
    for i in range(5):
        await _pub(mosquitto, "site/water/9", json.dumps({"volume_forward_m3": i}))
    async with _subscribed(link, collector):
        await _until(lambda: len(collector.of("water-9")) >= 5)
    assert [r.fields["volume_forward_m3"] for r in collector.of("water-9")] == [0, 1, 2, 3, 4]


async def test_311_persistent_session(mosquitto: ServiceProcess, collector: Collector) -> None:
    link = MqttLink(mosquitto.host, mosquitto.port, protocol="3.1.1", client_id="mw-test-p311")
    async with _subscribed(link, collector):
        pass
    await _pub(mosquitto, "site/water/9", json.dumps({"volume_forward_m3": 1.5}))
    async with _subscribed(link, collector):
        await _until(lambda: len(collector.of("water-9")) >= 1)
    assert collector.of("water-9")[0].fields == {"volume_forward_m3": 1.5}


async def test_reconnects_after_broker_restart(
    mosquitto: ServiceProcess, collector: Collector
) -> None:
    link = MqttLink(mosquitto.host, mosquitto.port, protocol="5", client_id="mw-test-restart",
                    backoff_cap_s=1.0)
    async with _subscribed(link, collector) as status:
        await _pub(mosquitto, "site/water/9", json.dumps({"volume_forward_m3": 1}))
        await _until(lambda: len(collector.readings) == 1)
        try:
            await asyncio.to_thread(mosquitto.stop)
            await _until(lambda: not status.connected)
        finally:
            await asyncio.to_thread(mosquitto.start)
        await _until(lambda: status.connected, timeout_s=15)
        await asyncio.sleep(0.3)
        await _pub(mosquitto, "site/water/9", json.dumps({"volume_forward_m3": 2}))
        await _until(lambda: len(collector.readings) == 2)
    assert [r.fields["volume_forward_m3"] for r in collector.readings] == [1, 2]
    assert status.disconnects >= 1 and status.connects >= 2


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[ServiceProcess]:
    """A Mosquitto that refuses anonymous clients; user ``gw`` / password ``s3cret-pw``."""
    passwd = tmp_path / "passwd"
    subprocess.run(
        [shutil.which("mosquitto_passwd") or "mosquitto_passwd", "-c", "-b", str(passwd),
         "gw", "s3cret-pw"],
        check=True, capture_output=True,
    )
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
        # started as root, mosquitto would drop to its own user, which cannot read
        # pytest's private temporary directory; as any other user this is ignored
        "user root\n"
    )
    svc = ServiceProcess("mosquitto-auth", [shutil.which("mosquitto") or "/usr/sbin/mosquitto",
                                             "-c", str(conf)], port, tmp_path)
    svc.start()
    yield svc
    svc.stop()


async def test_username_password_and_a_refused_login(
    auth_broker: ServiceProcess, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    bad = MqttLink(auth_broker.host, auth_broker.port, username="gw", password="wrong-pw",
                   client_id="mw-test-bad", backoff_cap_s=0.5)
    status = BusStatus()
    task = asyncio.create_task(run_bus(bad, [WATER], collector, status=status))
    await _until(lambda: status.last_error is not None)
    await asyncio.sleep(1.0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not status.connected and status.connects == 0
    assert "wrong-pw" not in caplog.text  # the secret is never logged
    assert "wrong-pw" not in repr(bad)

    good = MqttLink(auth_broker.host, auth_broker.port, username="gw", password="s3cret-pw",
                    client_id="mw-test-good", protocol="3.1.1")
    async with _subscribed(good, collector):
        await _pub(auth_broker, "site/water/9", '{"flow_m3h": 0.5}',
                   extra=("-u", "gw", "-P", "s3cret-pw"))
        await _until(lambda: len(collector.readings) == 1)
    assert collector.readings[0].fields == {"flow_m3h": 0.5}


def _tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meterwatch test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "srv.pem", tmp_path / "srv.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


# paho leaves the SSL socket of a failed handshake, and aiomqtt the one of a TLS
# session cancelled mid-read, to the garbage collector (their leaks, not ours):
# the ResourceWarnings are expected here and collected before the test ends.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_tls_with_a_private_ca(tmp_path: Path, collector: Collector) -> None:
    ca_file, cert_file, key_file = _tls_files(tmp_path)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\ncafile {ca_file}\n"
        f"certfile {cert_file}\nkeyfile {key_file}\nuser root\n"
    )
    broker = ServiceProcess("mosquitto-tls", [shutil.which("mosquitto") or "/usr/sbin/mosquitto",
                                               "-c", str(conf)], port, tmp_path)
    await asyncio.to_thread(broker.start)
    try:
        # without the private CA the certificate is refused
        untrusted = MqttLink(broker.host, port, tls=True, client_id="mw-test-untrusted")
        status = BusStatus()
        task = asyncio.create_task(run_bus(untrusted, [WATER], collector, status=status))
        await _until(lambda: status.last_error is not None)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert status.connects == 0
        assert "certificate" in (status.last_error or "").lower(), status.last_error

        link = MqttLink(broker.host, port, tls=True, ca_file=ca_file, client_id="mw-test-tls")
        async with _subscribed(link, collector):
            await _pub(broker, "site/water/9", '{"flow_m3h": 2.5}',
                       extra=("--cafile", str(ca_file)))
            await _until(lambda: len(collector.readings) == 1)
        assert collector.readings[0].fields == {"flow_m3h": 2.5}
    finally:
        await asyncio.to_thread(broker.stop)
        gc.collect()
