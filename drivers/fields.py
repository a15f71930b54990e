"""Canonical field names per device kind.

Profiles map vendor registers or payload paths onto these names, so the
anomaly core and the API never see vendor addresses. Units are part of every
name. Counters (`*_events`, `*_counter`) are cumulative and never decrease on
an honest device. The README's field table is generated from this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from drivers.reading import DeviceKind


@dataclass(frozen=True, slots=True)
class CanonicalField:
    name: str
    unit: str
    description: str
    counter: bool = False


def _f(name: str, unit: str, description: str, *, counter: bool = False) -> CanonicalField:
    return CanonicalField(name, unit, description, counter)


_COMMON = (_f("device_clock_s", "s", "device's own clock, unix seconds (for clock-skew checks)"),)

_ELECTRICITY = (
    _f("voltage_l1_v", "V", "phase L1 voltage"),
    _f("voltage_l2_v", "V", "phase L2 voltage"),
    _f("voltage_l3_v", "V", "phase L3 voltage"),
    _f("current_l1_a", "A", "phase L1 current"),
    _f("current_l2_a", "A", "phase L2 current"),
    _f("current_l3_a", "A", "phase L3 current"),
    _f("current_n_a", "A", "neutral current"),
    _f("power_l1_w", "W", "phase L1 active power (negative = export)"),
    _f("power_l2_w", "W", "phase L2 active power"),
    _f("power_l3_w", "W", "phase L3 active power"),
    _f("power_total_w", "W", "total active power"),
    _f("power_factor", "1", "total power factor"),
    _f("frequency_hz", "Hz", "grid frequency"),
    _f("energy_import_kwh", "kWh", "import active energy register", counter=True),
    _f("energy_export_kwh", "kWh", "export active energy register", counter=True),
    _f("magnet_events", "1", "magnetic-field tamper event counter", counter=True),
    _f("cover_events", "1", "meter/terminal cover open event counter", counter=True),
    _f("event_counter", "1", "programming/register-clear event counter", counter=True),
)

_WATER = (
    _f("volume_forward_m3", "m3", "forward volume register", counter=True),
    _f("volume_reverse_m3", "m3", "reverse (backward) volume register", counter=True),
    _f("flow_m3h", "m3/h", "instantaneous flow"),
    _f("status_bits", "1", "vendor status word (raw)"),
    _f("reverse_flow_flag", "1", "1 while the meter reports reverse flow"),
    _f("magnet_flag", "1", "1 while the meter reports a magnetic field"),
    _f("leak_flag", "1", "1 while the meter reports a leak"),
)

_GAS = (
    _f("volume_unconverted_m3", "m3", "volume at measurement conditions (Vm)", counter=True),
    _f("volume_converted_m3", "m3", "volume at base conditions (Vb)", counter=True),
    _f("temperature_c", "degC", "gas temperature"),
    _f("pressure_bar", "bar", "absolute gas pressure"),
    _f("conversion_factor", "1", "conversion factor C = Vb/Vm reported by the corrector"),
    _f("event_counter", "1", "corrector event/audit counter", counter=True),
)

_DISPENSER_NOZZLE = (
    _f("totalizer_volume_l", "L", "electronic volume totalizer", counter=True),
    _f("totalizer_amount", "currency", "electronic amount totalizer", counter=True),
    _f("transaction_volume_l", "L", "volume of the current/last transaction"),
    _f("transaction_amount", "currency", "amount of the current/last transaction"),
    _f("unit_price", "currency/L", "unit price of the current/last transaction"),
    _f("transaction_counter", "1", "number of transactions completed", counter=True),
    _f("state", "1", "nozzle state: 0 idle, 1 dispensing, 2 transaction complete"),
    _f("flow_rate_lpm", "L/min", "current flow rate"),
    _f("calibration_k_factor", "pulses/L", "calibration parameter (pulse factor)"),
    _f("parameter_change_counter", "1", "audit counter of parameter changes", counter=True),
)

_TANK_GAUGE = (
    _f("gross_volume_l", "L", "gross product volume at observed temperature"),
    _f("net_volume_l", "L", "product volume compensated to 15 degC"),
    _f("product_level_mm", "mm", "product level"),
    _f("water_level_mm", "mm", "water level"),
    _f("temperature_c", "degC", "product temperature"),
    _f("deliveries_net_l", "L", "cumulative net volume delivered (15 degC)", counter=True),
)

CANONICAL_FIELDS: Mapping[DeviceKind, Mapping[str, CanonicalField]] = MappingProxyType(
    {
        kind: MappingProxyType({f.name: f for f in (*specific, *_COMMON)})
        for kind, specific in (
            (DeviceKind.ELECTRICITY, _ELECTRICITY),
            (DeviceKind.WATER, _WATER),
            (DeviceKind.GAS, _GAS),
            (DeviceKind.DISPENSER_NOZZLE, _DISPENSER_NOZZLE),
            (DeviceKind.TANK_GAUGE, _TANK_GAUGE),
        )
    }
)


def canonical_field(kind: DeviceKind, name: str) -> CanonicalField:
    """The canonical field `name` of `kind`; KeyError names both when unknown."""
    try:
        return CANONICAL_FIELDS[kind][name]
    except KeyError:
        known = ", ".join(sorted(CANONICAL_FIELDS[kind]))
        raise KeyError(
            f"{name!r} is not a canonical field of {kind.value} (known: {known})"
        ) from None


def markdown_table() -> str:
    """The README's table of canonical fields (``python -m drivers.fields`` prints it)."""
    lines = ["| kind | field | unit | meaning |", "| --- | --- | --- | --- |"]
    for kind, fields in CANONICAL_FIELDS.items():
        for f in fields.values():
            meaning = f.description + (" (counter)" if f.counter else "")
            lines.append(f"| {kind.value} | `{f.name}` | {f.unit} | {meaning} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
