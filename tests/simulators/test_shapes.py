"""Pure checks of what the servers put on the wire: register images and MQTT payloads.

Each is decoded with the drivers' own decoders (`drivers.codec.decode`,
`drivers.payloads.decode_payload`) and must give back the model's values.
"""

from __future__ import annotations

import json

import pytest

from drivers.codec import DataType, decode
from drivers.payloads import decode_payload
from drivers.profiles import load_profile
from drivers.reading import DeviceKind
from simulators.engine import Sample
from simulators.offline import generate
from simulators.serve import mqtt_payloads, register_blocks, register_image


@pytest.mark.parametrize(
    ("device", "profile"),
    [
        ("meter-1", "eastron_sdm630"),
        ("feeder-1", "abb_b2x"),
        ("water-2", "water_meter"),
        ("gas-1", "gas_corrector"),
        ("nozzle-1", "fuel_nozzle"),
        ("tank-1", "tank_gauge"),
    ],
)
def test_register_image_decodes_to_the_model_values(device: str, profile: str) -> None:
    run = generate("water_reverse_flow", seed=2, days=4, all_fields=True)
    s = run.devices[device]
    prof = load_profile(profile, kind=DeviceKind(s.kind))
    i = s.ts_ns.size - 7  # day 3: water-2 flows backwards (negative flow, flag bits)
    fields = {k: float(v[i]) for k, v in s.fields.items()}
    image = register_image(prof, fields)
    blocks = register_blocks(prof)
    for f in prof.fields:
        lo = blocks[f.function][0]
        regs = image[f.function][f.address - lo : f.end - lo]
        got = decode(regs, f)
        tol = (
            1e-6 * max(1.0, abs(fields[f.name]))
            if f.data_type is DataType.F32
            else (abs(f.scale) / 2 + 1e-9)
        )
        assert got == pytest.approx(fields[f.name], abs=tol), f.name


def test_register_image_reports_values_that_do_not_fit() -> None:
    prof = load_profile("fuel_nozzle", kind=DeviceKind.DISPENSER_NOZZLE)
    problems: set[str] = set()
    image = register_image(prof, {"state": -5.0, "transaction_counter": 12.0}, problems=problems)
    assert problems == {"state"}
    f = prof.field("transaction_counter")
    assert decode(image[3][f.address : f.end], f) == 12.0


def _sample(fields: dict[str, float]) -> Sample:
    return Sample(index=1, ts_ns=1_780_272_000 * 10**9, fields=fields, ok=True)


ELEC = {
    "energy_import_kwh": 1234.567,
    "energy_export_kwh": 1.25,
    "power_total_w": 2345.6,
    "voltage_l1_v": 231.2,
    "current_l1_a": 3.4,
    "power_factor": 0.96,
    "frequency_hz": 50.01,
}


def test_tasmota_shape() -> None:
    prof = load_profile("tasmota_energy", kind=DeviceKind.ELECTRICITY)
    ((topic, payload),) = mqtt_payloads(prof, "plug-7", _sample(ELEC))
    assert topic == "tele/plug-7/SENSOR"
    doc = json.loads(payload)
    assert doc["Time"] == "2026-06-01T00:00:00" and doc["ENERGY"]["Total"] == 1234.567
    assert prof.mqtt is not None
    got = decode_payload(prof.mqtt, payload, template="tele/{topic}/SENSOR").fields
    assert got == {k: pytest.approx(v) for k, v in ELEC.items() if k in got}
    assert set(got) == set(prof.field_names)


def test_shelly_shape_splits_counters_and_instantaneous_values() -> None:
    prof = load_profile("shelly_em", kind=DeviceKind.ELECTRICITY)
    messages = dict(mqtt_payloads(prof, "shellyproem-1", _sample(ELEC)))
    assert set(messages) == {"shellyproem-1/status/em1:0", "shellyproem-1/status/em1data:0"}
    data = json.loads(messages["shellyproem-1/status/em1data:0"])
    assert data == {
        "total_act_energy": pytest.approx(1234567.0),
        "total_act_ret_energy": pytest.approx(1250.0),
    }
    assert prof.mqtt is not None
    got: dict[str, float] = {}
    for t, payload in messages.items():
        got.update(decode_payload(prof.mqtt, payload, template=t).fields)
    assert got == {k: pytest.approx(v) for k, v in ELEC.items()}


def test_json_generic_shape() -> None:
    prof = load_profile("json_generic", kind=DeviceKind.WATER)
    fields = {"volume_forward_m3": 12.5, "flow_m3h": 0.25, "reverse_flow_flag": 0.0}
    ((topic, payload),) = mqtt_payloads(prof, "site/water-9", _sample(fields))
    assert topic == "site/water-9" and json.loads(payload) == fields
    assert prof.mqtt is not None
    assert decode_payload(prof.mqtt, payload, template="{topic}").fields == fields
