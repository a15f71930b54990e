"""MQTT payload decoders on real message shapes, and the malformed ones."""

from __future__ import annotations

import json

import pytest

from drivers.errors import DecodeError
from drivers.payloads import decode_payload
from drivers.profiles import load_profile
from drivers.reading import DeviceKind

TASMOTA = load_profile("tasmota_energy").mqtt
SHELLY = load_profile("shelly_em").mqtt
GENERIC_WATER = load_profile("json_generic", kind=DeviceKind.WATER).mqtt
assert TASMOTA and SHELLY and GENERIC_WATER


def test_tasmota_sensor_message() -> None:
    msg = {
        "Time": "2024-05-01T12:00:00",
        "ENERGY": {"TotalStartTime": "2023-01-01T00:00:00", "Total": 123.456, "Yesterday": 1.2,
                   "Today": 0.3, "Period": 2, "Power": 245, "ApparentPower": 260,
                   "ReactivePower": 80, "Factor": 0.94, "Voltage": 231, "Current": 1.06},
    }
    out = decode_payload(TASMOTA, json.dumps(msg).encode(), template="tele/{topic}/SENSOR")
    assert out.fields == {"energy_import_kwh": 123.456, "power_total_w": 245.0,
                          "voltage_l1_v": 231.0, "current_l1_a": 1.06, "power_factor": 0.94}
    assert out.online is None


def test_tasmota_lwt() -> None:
    assert decode_payload(TASMOTA, b"Offline", template="tele/{topic}/LWT").online is False
    assert decode_payload(TASMOTA, b"Online", template="tele/{topic}/LWT").online is True
    with pytest.raises(DecodeError, match="neither Online nor Offline"):
        decode_payload(TASMOTA, b"maybe", template="tele/{topic}/LWT")


def test_shelly_gen2_em1_and_em1data() -> None:
    em1 = {"id": 0, "current": 2.1, "voltage": 229.8, "act_power": 480.2, "aprt_power": 490.0,
           "pf": 0.98, "freq": 50.0, "calibration": "factory"}
    out = decode_payload(SHELLY, json.dumps(em1).encode(), template="{topic}/status/em1:0")
    assert out.fields == {"voltage_l1_v": 229.8, "current_l1_a": 2.1, "power_total_w": 480.2,
                          "power_factor": 0.98, "frequency_hz": 50.0}
    data = {"id": 0, "total_act_energy": 123456.0, "total_act_ret_energy": 10.0}
    out = decode_payload(SHELLY, json.dumps(data).encode(), template="{topic}/status/em1data:0")
    assert out.fields == {"energy_import_kwh": pytest.approx(123.456),
                          "energy_export_kwh": pytest.approx(0.01)}


def test_shelly_notify_status_frame() -> None:
    frame = {"src": "shellyproem50", "method": "NotifyStatus",
             "params": {"ts": 1714564800.1, "em1:0": {"id": 0, "act_power": 12.5}}}
    out = decode_payload(SHELLY, json.dumps(frame).encode())
    assert out.fields == {"power_total_w": 12.5}


def test_generic_json_reads_canonical_names() -> None:
    out = decode_payload(GENERIC_WATER, b'{"volume_forward_m3": 12.5, "flow_m3h": "0.5", '
                                        b'"leak_flag": true, "other": 1}')
    assert out.fields == {"volume_forward_m3": 12.5, "flow_m3h": 0.5, "leak_flag": 1.0}


@pytest.mark.parametrize(
    ("spec_name", "payload", "match"),
    [
        ("tasmota", b"\xff\xfe", "not JSON"),
        ("tasmota", b"{not json", "not JSON"),
        ("tasmota", b"[1, 2]", "expected an object"),
        ("tasmota", b'{"Time": "x"}', "without an ENERGY object"),
        ("tasmota", b'{"ENERGY": {"Power": "lots"}}', "power_total_w .* not a number"),
        ("tasmota", b'{"ENERGY": {"Power": [1, 2]}}', "list, not a number"),
        ("shelly", b'{"id": 0}', "none of the profile's paths"),
        ("generic", b'{"flow_m3h": "NaN"}', "nan"),
    ],
)
def test_malformed_payloads_raise_decode_error(spec_name: str, payload: bytes, match: str) -> None:
    spec = {"tasmota": TASMOTA, "shelly": SHELLY, "generic": GENERIC_WATER}[spec_name]
    with pytest.raises(DecodeError, match=match):
        decode_payload(spec, payload, template="tele/{topic}/SENSOR")
