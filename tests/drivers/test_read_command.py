"""`meterwatch read` against a pyModbusTCP server holding known registers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from drivers.codec import DataType, Order, RegisterSpec, encode
from drivers.profiles import load_profile
from gateway.cli import main
from tests.drivers.peers import register_image
from tests.services import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    from pyModbusTCP.server import ModbusServer

    port = free_port()
    server = ModbusServer("127.0.0.1", port, no_block=True)
    sdm = register_image(load_profile("eastron_sdm630"), {"voltage_l1_v": 230.5,
                                                           "frequency_hz": 50.0})
    for addr, value in sdm[4].items():
        server.data_bank.set_input_registers(addr, [value])
    # a word-swapped float at holding register 4 (manual: 40005)
    server.data_bank.set_holding_registers(
        4, encode(3.75, RegisterSpec(data_type=DataType.F32, order=Order.CDAB))
    )
    server.start()
    yield port
    server.stop()


def test_reads_a_profile_as_a_table(server_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["read", "--host", "127.0.0.1", "--port", str(server_port), "--profile",
               "eastron_sdm630", "--fields", "voltage_l1_v,frequency_hz", "--raw"])
    out = capsys.readouterr().out
    assert rc == 0
    assert any(line.split()[:3] == ["voltage_l1_v", "230.5", "V"] for line in out.splitlines())
    assert any(line.split()[:3] == ["frequency_hz", "50", "Hz"] for line in out.splitlines())
    assert "fc04 0x0000+2: 4366 8000" in out


def test_single_field_as_json_with_order_guess(
    server_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["read", "--host", "127.0.0.1", "--port", str(server_port), "--address", "40005",
               "--base", "40001", "--function", "3", "--type", "f32", "--json", "--raw",
               "--guess-order"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert doc["raw"][0]["registers"] == [0x0000, 0x4070]
    guesses = doc["guess_order"]["value"]
    assert guesses["CDAB"] == {"value": 3.75, "plausible": True}
    assert [o for o, g in guesses.items() if g["plausible"]] == ["CDAB"]


def test_unreachable_device_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    rc = main(["read", "--host", "127.0.0.1", "--port", str(port), "--timeout", "0.5",
               "--profile", "water_meter"])
    assert rc == 1
    assert f"127.0.0.1:{port}" in capsys.readouterr().err


def test_unknown_profile_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["read", "--host", "127.0.0.1", "--profile", "nope"])
    assert rc == 1
    assert "unknown profile 'nope'" in capsys.readouterr().err
