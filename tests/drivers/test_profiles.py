"""Profile loader: shipped profiles, user directories, and every validation error."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.codec import DataType, Order
from drivers.errors import ProfileError
from drivers.fields import CANONICAL_FIELDS
from drivers.profiles import (
    PayloadDecoder,
    ProfileProtocol,
    available_profiles,
    check_profile_name,
    load_profile,
    load_profile_file,
    parse_path,
)
from drivers.reading import DeviceKind

SHIPPED = {
    "eastron_sdm630": DeviceKind.ELECTRICITY,
    "abb_b2x": DeviceKind.ELECTRICITY,
    "water_meter": DeviceKind.WATER,
    "gas_corrector": DeviceKind.GAS,
    "fuel_nozzle": DeviceKind.DISPENSER_NOZZLE,
    "tank_gauge": DeviceKind.TANK_GAUGE,
    "tasmota_energy": DeviceKind.ELECTRICITY,
    "shelly_em": DeviceKind.ELECTRICITY,
}


@pytest.mark.parametrize(("name", "kind"), SHIPPED.items())
def test_shipped_profiles_load_with_canonical_fields(name: str, kind: DeviceKind) -> None:
    profile = load_profile(name, kind=kind)
    assert profile.kind is kind
    assert profile.field_names
    assert set(profile.field_names) <= set(CANONICAL_FIELDS[kind])
    for f in profile.fields:
        assert f.unit == CANONICAL_FIELDS[kind][f.name].unit
    assert check_profile_name(name, kind, []) is None


def test_available_lists_every_shipped_profile() -> None:
    assert set(SHIPPED) | {"json_generic"} <= set(available_profiles())


def test_sdm630_map_matches_the_manual() -> None:
    p = load_profile("eastron_sdm630")
    f = p.field("frequency_hz")
    assert (f.function, f.address, f.data_type, f.order) == (4, 0x46, DataType.F32, Order.ABCD)
    assert p.field("energy_import_kwh").address == 0x48
    assert {"current_n_a", "power_factor", "magnet_events"} <= set(p.field_names)


def test_addressing_base_is_removed() -> None:
    water = load_profile("water_meter")
    assert water.address_base == 40001
    assert water.field("volume_forward_m3").address == 0
    assert water.field("volume_forward_m3").order is Order.DCBA
    assert water.field("leak_flag").bit == 2
    assert load_profile("gas_corrector").field("volume_unconverted_m3").address == 0


def test_abb_uses_scaled_holding_registers() -> None:
    f = load_profile("abb_b2x").field("energy_import_kwh")
    assert (f.function, f.address, f.data_type, f.scale) == (3, 0x5000, DataType.U64, 0.01)


def test_generic_json_profile_takes_the_device_kind() -> None:
    p = load_profile("json_generic", kind=DeviceKind.GAS)
    assert p.kind is DeviceKind.GAS
    assert p.mqtt is not None and p.mqtt.decoder is PayloadDecoder.JSON
    assert {f.path for f in p.mqtt.fields} == set(CANONICAL_FIELDS[DeviceKind.GAS])
    with pytest.raises(ProfileError, match="generic"):
        load_profile("json_generic")


def test_mqtt_profiles_have_topics_and_paths() -> None:
    p = load_profile("shelly_em")
    assert p.protocol is ProfileProtocol.MQTT and p.mqtt is not None
    assert "{topic}/status/em1:0" in p.mqtt.topics
    energy = next(f for f in p.mqtt.fields if f.name == "energy_import_kwh")
    assert energy.scale == 0.001


def test_wrong_kind_and_unknown_names_are_reported() -> None:
    msg = check_profile_name("water_meter", DeviceKind.GAS, [])
    assert msg is not None and "water" in msg and "gas" in msg
    msg = check_profile_name("no_such_meter", DeviceKind.GAS, [])
    assert msg is not None and "unknown profile 'no_such_meter'" in msg
    assert "eastron_sdm630" in msg
    msg = check_profile_name("../etc/passwd", None, [])
    assert msg is not None and "not valid" in msg


def _write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(body)
    return path


def test_user_directory_adds_and_overrides_profiles(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "my_meter",
        'kind = "water"\nprotocol = "modbus"\naddress_base = 1\n'
        '[fields]\nflow_m3h = { address = 11, function = 4, type = "i32", scale = 0.001, '
        'word_order = "little" }\n',
    )
    _write(
        tmp_path,
        "water_meter",
        'kind = "water"\nprotocol = "modbus"\n[fields]\n'
        'flow_m3h = { address = 0, function = 3, type = "u16" }\n',
    )
    assert "my_meter" in available_profiles(extra_dirs=[tmp_path])
    p = load_profile("my_meter", extra_dirs=[tmp_path])
    f = p.field("flow_m3h")
    assert (f.address, f.order, f.scale) == (10, Order.CDAB, 0.001)
    assert load_profile("water_meter", extra_dirs=[tmp_path]).field_names == ("flow_m3h",)
    assert check_profile_name("my_meter", DeviceKind.WATER, [tmp_path]) is None


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ('kind = "water"\nprotocol = "modbus"\n[fields]\nvolume_m3 = { address = 0, '
         'function = 3, type = "u16" }', "fields.volume_m3: 'volume_m3' is not a canonical water"),
        ('kind = "water"\nprotocol = "modbus"\n[fields]\nflow_m3h = { address = 0, '
         'function = 3, type = "u32", count = 1 }', "fields.flow_m3h.count: u32 takes 2"),
        ('kind = "water"\nprotocol = "modbus"\naddress_base = 40001\n[fields]\nflow_m3h = '
         '{ address = 5, function = 3, type = "u16" }', "below address_base 40001"),
        ('kind = "water"\nprotocol = "modbus"\n[fields]\nflow_m3h = { address = 65535, '
         'function = 3, type = "u32" }', "passes 65535"),
        ('kind = "water"\nprotocol = "modbus"\n[fields]\nflow_m3h = { address = 0, '
         'function = 3, type = "f32", bit = 1 }', "bit fields need an integer type"),
        ('kind = "water"\nprotocol = "modbus"\n[fields]\nflow_m3h = { address = 0, '
         'function = 3, type = "f32", unit = "l/h" }', "canonical unit 'm3/h'"),
        ('kind = "water"\nprotocol = "modbus"\n[fields]\nflow_m3h = { address = 0, '
         'function = 6, type = "f32" }', "fields.flow_m3h.function"),
        ('kind = "water"\nprotocol = "modbus"\n[fields]\nflow_m3h = { address = 0, '
         'type = "f32" }', "fields.flow_m3h.function: missing"),
        ('kind = "water"\nprotocol = "modbus"\n[fields]\nflow_m3h = { address = 0, '
         'function = 3, type = "f17" }', "fields.flow_m3h.type"),
        ('kind = "watr"\nprotocol = "modbus"\n', "kind"),
        ('kind = "water"\nprotocol = "mqtt"\ndecoder = "json"\ntopics = ["x"]\n[fields]\n'
         'flow_m3h = { path = "a" }', "must contain {topic}"),
        ('kind = "water"\nprotocol = "mqtt"\ndecoder = "json"\ntopics = ["{topic}"]\n'
         '[fields]\nflow_m3h = { path = "a..b" }', "ill-formed path"),
        ('kind = "water"\nprotocol = "modbus"\n[fields]\n', "maps no fields"),
        ('kind = "water"\nprotocol = "modbus"\nfields = [', "TOML syntax error"),
    ],
)
def test_invalid_profiles_name_file_and_field(tmp_path: Path, body: str, match: str) -> None:
    path = _write(tmp_path, "bad", body)
    with pytest.raises(ProfileError, match=match) as info:
        load_profile_file(path)
    assert "bad.toml" in str(info.value)


def test_parse_path() -> None:
    assert parse_path("ENERGY.Power[1]") == ("ENERGY", "Power", 1)
    assert parse_path("em1:0.act_power") == ("em1:0", "act_power")
    for bad in ("", "a..b", "a[x]", ".a"):
        with pytest.raises(ValueError, match="ill-formed"):
            parse_path(bad)
