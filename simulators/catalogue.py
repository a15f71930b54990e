"""The scenario catalogue: a standard site and one named scenario per fraud or drift.

The standard site has a fuel station (one tank, four nozzles), an
electricity feeder over four customer meters (4 % technical loss), a bulk
water meter over three household meters (8 % unmetered leakage) and a gas
meter with a volume corrector. Every catalogue scenario is that site with
one condition injected from a given day; ``honest`` injects none. Honest
devices have small true errors well inside their MPE.

Scenario files (TOML, see ``simulators/scenarios/demo.toml``) describe other
sites, or the standard one (``base = "standard"``) with their own conditions.

Failure modes handled: an unknown scenario name, an unreadable or invalid
file, unknown keys, labels or kinds all raise `ScenarioError` naming the file
and the offending entry.
"""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Iterator, Mapping
from datetime import datetime
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from drivers.reading import DeviceKind
from simulators.spec import (
    DAY_S,
    DEFAULT_START_NS,
    NS_PER_S,
    Condition,
    DeviceSpec,
    GroupSpec,
    Label,
    ParamValue,
    Scenario,
    ScenarioError,
    Transport,
)


def _p(**kw: ParamValue) -> Mapping[str, ParamValue]:
    return MappingProxyType(dict(kw))


def standard_devices() -> tuple[DeviceSpec, ...]:
    """The standard site's devices (unit ids 1-41 on one Modbus port)."""
    k = DeviceKind
    nozzle_errors = (0.0004, -0.0006, 0.0009, -0.0002)
    devices = [
        DeviceSpec(
            "tank-1",
            k.TANK_GAUGE,
            "tank_gauge",
            "gauge",
            unit_id=1,
            params=_p(capacity_l=30_000.0, diameter_mm=2_500.0),
        ),
    ]
    devices += [
        DeviceSpec(
            f"nozzle-{i}",
            k.DISPENSER_NOZZLE,
            "fuel_nozzle",
            "0.5",
            true_error=nozzle_errors[i - 1],
            unit_id=10 + i,
            params=_p(rate_per_h=2.5 + 0.5 * i, price=1.759, grade="diesel"),
        )
        for i in range(1, 5)
    ]
    devices.append(
        DeviceSpec("feeder-1", k.ELECTRICITY, "abb_b2x", "0.5S", true_error=0.0005, unit_id=21)
    )
    meter_errors = (0.002, -0.003, 0.001, -0.0015)
    meter_params = (
        _p(mean_kw=2.5),
        _p(mean_kw=3.5),
        _p(mean_kw=2.0),
        _p(mean_kw=9.0, profile="commercial"),
    )
    devices += [
        DeviceSpec(
            f"meter-{i}",
            k.ELECTRICITY,
            "eastron_sdm630",
            "1",
            true_error=meter_errors[i - 1],
            unit_id=21 + i,
            params=meter_params[i - 1],
        )
        for i in range(1, 5)
    ]
    devices.append(
        DeviceSpec("bulk-water", k.WATER, "water_meter", "1", true_error=-0.002, unit_id=31)
    )
    water_errors = (-0.004, 0.006, -0.008)
    devices += [
        DeviceSpec(
            f"water-{i}",
            k.WATER,
            "water_meter",
            "2",
            true_error=water_errors[i - 1],
            unit_id=31 + i,
            params=_p(mean_m3_day=0.3 + 0.1 * i),
        )
        for i in range(1, 4)
    ]
    devices.append(DeviceSpec("gas-1", k.GAS, "gas_corrector", "1.5", true_error=0.003, unit_id=41))
    return tuple(devices)


def standard_groups() -> tuple[GroupSpec, ...]:
    return (
        GroupSpec("tank-1", "tank", "tank-1", tuple(f"nozzle-{i}" for i in range(1, 5))),
        GroupSpec(
            "feeder-1",
            "feeder",
            "feeder-1",
            tuple(f"meter-{i}" for i in range(1, 5)),
            technical_loss_pct=4.0,
        ),
        GroupSpec(
            "district-1",
            "bulk",
            "bulk-water",
            ("water-1", "water-2", "water-3"),
            technical_loss_pct=8.0,
        ),
    )


def _c(
    device: str,
    label: Label,
    start_day: float,
    *,
    end_day: float | None = None,
    magnitude: float | None = None,
    **params: ParamValue,
) -> Condition:
    return Condition(
        device=device,
        label=label,
        start_s=start_day * DAY_S,
        end_s=None if end_day is None else end_day * DAY_S,
        magnitude=magnitude,
        params=_p(**params),
    )


L = Label
# name -> (description, conditions)
_CATALOGUE: dict[str, tuple[str, tuple[Condition, ...]]] = {
    "honest": ("Every device honest, true errors well inside the MPE.", ()),
    **{
        f"over_registration_{tag}pct": (
            f"nozzle-2 over-registers by {pct} % from day 3 (edited pulser or pulse-adding chip).",
            (_c("nozzle-2", L.OVER_REGISTRATION, 3.0, magnitude=pct / 100.0),),
        )
        for tag, pct in (("0_15", 0.15), ("0_3", 0.3), ("0_5", 0.5), ("1", 1.0), ("3", 3.0))
    },
    "intermittent_over_registration": (
        "nozzle-3 carries a remote-controlled chip adding 3 % on 30 % of transactions from day 3.",
        (_c("nozzle-3", L.INTERMITTENT_OVER_REGISTRATION, 3.0, magnitude=0.03, fraction=0.3),),
    ),
    "calibration_change": (
        "nozzle-1's K-factor is edited on day 4 so it over-registers 1 %; the audit counter rises.",
        (_c("nozzle-1", L.CALIBRATION_CHANGE, 4.0, magnitude=0.01, audited=1),),
    ),
    "totalizer_rollback": (
        "nozzle-4's volume totalizer is rolled back by 5000 L at noon on day 4.",
        (_c("nozzle-4", L.TOTALIZER_ROLLBACK, 4.5, magnitude=5000.0, mode="rollback"),),
    ),
    "transaction_mismatch": (
        "From day 3, 20 % of nozzle-2's transactions report 5 % less than the totalizer counts.",
        (
            _c(
                "nozzle-2",
                L.TRANSACTION_MISMATCH,
                3.0,
                magnitude=0.05,
                fraction=0.2,
                mode="under_reported",
            ),
        ),
    ),
    "tank_leak": (
        "tank-1 leaks 3 L/h (net) from day 3.",
        (_c("tank-1", L.TANK_LEAK, 3.0, magnitude=3.0),),
    ),
    "ct_bypass": (
        "meter-2's L1 current transformer is bypassed (90 % of the current) from day 3.",
        (_c("meter-2", L.CT_BYPASS, 3.0, magnitude=0.9, phase=1),),
    ),
    "reverse_energy": (
        "meter-3 is wired in reverse from day 3: its export register rises.",
        (_c("meter-3", L.REVERSE_ENERGY, 3.0, phases="1,2,3"),),
    ),
    "voltage_loss": (
        "meter-1's L2 voltage lead is cut (10 % left) under load from day 3 to day 6.",
        (_c("meter-1", L.VOLTAGE_LOSS, 3.0, end_day=6.0, magnitude=0.1, phase=2),),
    ),
    "register_slowed": (
        "meter-4's energy register advances 30 % slower than its measured power from day 3.",
        (_c("meter-4", L.REGISTER_SLOWED, 3.0, magnitude=0.3),),
    ),
    "magnet_event": (
        "A magnet on meter-2 from day 3 to day 5: event counter +1, 50 % under-registration.",
        (_c("meter-2", L.MAGNET_EVENT, 3.0, end_day=5.0, magnitude=0.5),),
    ),
    "cover_event": (
        "meter-1's terminal cover is opened on day 3 (cover event counter +1).",
        (_c("meter-1", L.COVER_EVENT, 3.25),),
    ),
    "water_reverse_flow": (
        "water-2 is mounted backwards from day 3: consumption counts on the reverse register.",
        (_c("water-2", L.REVERSE_FLOW, 3.0, magnitude=1.0),),
    ),
    "magnet_consumption_drop": (
        "A magnet stops water-3 from day 3 (95 % less registered, no flag).",
        (_c("water-3", L.MAGNET_CONSUMPTION_DROP, 3.0, magnitude=0.95, flagged=0),),
    ),
    "stuck_register": (
        "water-1's register sticks from day 3 (no advance while water flows).",
        (_c("water-1", L.STUCK_REGISTER, 3.0),),
    ),
    "gas_wrong_temperature": (
        "From day 2 gas-1 converts with a fixed 15 degC instead of the measured gas "
        "temperature (which it still reports): its factor disagrees with its temperature.",
        (_c("gas-1", L.GAS_WRONG_TEMPERATURE, 2.0, mode="substitute", value_c=15.0),),
    ),
    "gas_temperature_drift": (
        "gas-1's temperature sensor drifts to +10 degC over 30 days from day 2; Vb too low "
        "but consistent with the reported temperature.",
        (_c("gas-1", L.GAS_WRONG_TEMPERATURE, 2.0, magnitude=10.0, mode="drift", ramp_days=30.0),),
    ),
    "slow_drift": (
        "meter-3's error drifts from its honest value to +2 % (twice the class-1 MPE) over "
        "120 days from day 0.",
        (_c("meter-3", L.SLOW_DRIFT, 0.0, magnitude=0.02, ramp_days=120.0),),
    ),
    "comm_loss": (
        "meter-1 does not answer from day 3 06:00 to day 4 18:00.",
        (_c("meter-1", L.COMM_LOSS, 3.25, end_day=4.75),),
    ),
    "clock_skew": (
        "water-1's clock jumps 600 s ahead on day 3 and gains 30 s a day.",
        (_c("water-1", L.CLOCK_SKEW, 3.0, magnitude=600.0, drift_s_per_day=30.0),),
    ),
}


def scenario_names() -> list[str]:
    """Names of the catalogue scenarios and the bundled scenario files."""
    files = [
        p.name.removesuffix(".toml")
        for p in resources.files("simulators.scenarios").iterdir()
        if p.name.endswith(".toml")
    ]
    return sorted(_CATALOGUE) + sorted(f for f in files if f not in _CATALOGUE)


def catalogue_scenario(name: str) -> Scenario:
    """The named catalogue scenario on the standard site."""
    try:
        description, conds = _CATALOGUE[name]
    except KeyError:
        raise ScenarioError(
            f"unknown scenario {name!r} (known: {', '.join(scenario_names())})"
        ) from None
    return Scenario(
        name=name,
        description=description,
        devices=standard_devices(),
        groups=standard_groups(),
        conditions=conds,
    )


def get_scenario(scenario: str | Path | Scenario) -> Scenario:
    """A Scenario from a catalogue name, a bundled file name, or a TOML file path."""
    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, str) and scenario in _CATALOGUE:
        return catalogue_scenario(scenario)
    path = Path(scenario)
    if isinstance(scenario, str) and not path.suffix:
        bundled = resources.files("simulators.scenarios").joinpath(f"{scenario}.toml")
        if bundled.is_file():
            return parse_scenario(
                tomllib.loads(bundled.read_text(encoding="utf-8")), source=f"{scenario}.toml"
            )
        raise ScenarioError(f"unknown scenario {scenario!r} (known: {', '.join(scenario_names())})")
    return load_scenario_file(path)


def load_scenario_file(path: Path) -> Scenario:
    """Read a TOML scenario file. Raises `ScenarioError` naming the file and entry."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: TOML syntax error: {exc}") from None
    return parse_scenario(data, source=str(path))


_TOP_KEYS = {
    "name",
    "description",
    "base",
    "start",
    "step_s",
    "devices",
    "groups",
    "conditions",
    "serve",
}
_DEVICE_KEYS = {
    "id",
    "kind",
    "profile",
    "accuracy_class",
    "true_error",
    "transport",
    "unit_id",
    "topic",
    "params",
    "step_s",
}
_GROUP_KEYS = {"id", "type", "reference", "members", "technical_loss_pct"}
_COND_KEYS = {"device", "label", "start_day", "end_day", "magnitude", "params"}


_GROUP_TYPES = ("tank", "feeder", "bulk", "check")


@contextlib.contextmanager
def _at(where: str) -> Iterator[None]:
    """Turn a missing key or a wrong type inside one entry into a ScenarioError naming it."""
    try:
        yield
    except ScenarioError:
        raise
    except KeyError as exc:
        raise ScenarioError(f"{where}: missing key {exc}") from None
    except (ValueError, TypeError) as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def _unknown(where: str, item: Mapping[str, Any], allowed: set[str]) -> None:
    if not isinstance(item, Mapping):
        raise ScenarioError(f"{where}: must be a table, got {type(item).__name__}")
    extra = sorted(set(item) - allowed)
    if extra:
        raise ScenarioError(f"{where}: unknown key(s) {extra} (allowed: {sorted(allowed)})")


def _params(where: str, value: Any) -> Mapping[str, ParamValue]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict) or not all(
        isinstance(v, (int, float, str, bool)) for v in value.values()
    ):
        raise ScenarioError(f"{where}.params: must be a table of numbers or strings")
    return MappingProxyType(dict(value))


def parse_scenario(data: Mapping[str, Any], *, source: str = "<scenario>") -> Scenario:
    """Build a Scenario from a parsed TOML mapping (see ``demo.toml`` for the format)."""
    _unknown(source, data, _TOP_KEYS)
    name = str(data.get("name", Path(source).stem))
    devices: list[DeviceSpec] = []
    groups: list[GroupSpec] = []
    if data.get("base") is not None:
        if data["base"] != "standard":
            raise ScenarioError(f"{source}.base: only 'standard' is known, got {data['base']!r}")
        devices += standard_devices()
        groups += standard_groups()
    for i, d in enumerate(data.get("devices", [])):
        where = f"{source}: devices[{i}]"
        with _at(where):
            _unknown(where, d, _DEVICE_KEYS)
            kind = DeviceKind(d["kind"])
            devices.append(
                DeviceSpec(
                    id=str(d["id"]),
                    kind=kind,
                    profile=str(d["profile"]),
                    accuracy_class=str(d.get("accuracy_class", _default_class(kind))),
                    true_error=float(d.get("true_error", 0.0)),
                    transport=Transport(d.get("transport", "modbus")),
                    unit_id=None if d.get("unit_id") is None else int(d["unit_id"]),
                    topic=None if d.get("topic") is None else str(d["topic"]),
                    params=_params(where, d.get("params")),
                    step_s=None if d.get("step_s") is None else float(d["step_s"]),
                )
            )
    for i, g in enumerate(data.get("groups", [])):
        where = f"{source}: groups[{i}]"
        with _at(where):
            _unknown(where, g, _GROUP_KEYS)
            if g["type"] not in _GROUP_TYPES:
                raise ScenarioError(
                    f"{where}.type: {g['type']!r} is not one of {', '.join(_GROUP_TYPES)}"
                )
            groups.append(
                GroupSpec(
                    id=str(g["id"]),
                    type=str(g["type"]),
                    reference=str(g["reference"]),
                    members=tuple(str(m) for m in g["members"]),
                    technical_loss_pct=float(g.get("technical_loss_pct", 0.0)),
                )
            )
    conds: list[Condition] = []
    for i, c in enumerate(data.get("conditions", [])):
        where = f"{source}: conditions[{i}]"
        with _at(where):
            _unknown(where, c, _COND_KEYS)
            if c["label"] not in set(Label):
                raise ScenarioError(
                    f"{where}.label: unknown {c['label']!r} (known: {', '.join(Label)})"
                )
            conds.append(
                Condition(
                    device=str(c["device"]),
                    label=Label(c["label"]),
                    start_s=float(c.get("start_day", 0.0)) * DAY_S,
                    end_s=None if c.get("end_day") is None else float(c["end_day"]) * DAY_S,
                    magnitude=None if c.get("magnitude") is None else float(c["magnitude"]),
                    params=_params(where, c.get("params")),
                )
            )
    start_ns = DEFAULT_START_NS
    if data.get("start") is not None:
        start = data["start"]
        if isinstance(start, str):
            start = datetime.fromisoformat(start.replace("Z", "+00:00"))
        if not isinstance(start, datetime) or start.tzinfo is None:
            raise ScenarioError(f"{source}.start: must be a date-time with a UTC offset")
        start_ns = int(start.timestamp()) * NS_PER_S
    step = data.get("step_s", {})
    if not isinstance(step, dict):
        raise ScenarioError(f"{source}.step_s: must be a table kind = seconds")
    return Scenario(
        name=name,
        description=str(data.get("description", "")),
        devices=tuple(devices),
        groups=tuple(groups),
        conditions=tuple(conds),
        start_ns=int(start_ns),
        step_s=MappingProxyType({str(k): float(v) for k, v in step.items()}),
    )


_DEFAULT_CLASS = {
    DeviceKind.ELECTRICITY: "1",
    DeviceKind.WATER: "2",
    DeviceKind.GAS: "1.5",
    DeviceKind.DISPENSER_NOZZLE: "0.5",
    DeviceKind.TANK_GAUGE: "gauge",
}


def _default_class(kind: DeviceKind) -> str:
    # Same defaults as anomaly.mpe.DEFAULT_CLASS (simulators do not import anomaly).
    return _DEFAULT_CLASS[kind]


_SERVE_KEYS = {"modbus_port", "speed", "seed", "mqtt", "rtu_link", "mqtt_period_s", "host"}


def serve_options(scenario: str | Path) -> dict[str, Any]:
    """The ``[serve]`` table of a scenario file (empty for catalogue scenarios).

    Keys: modbus_port, speed, seed, mqtt ("host:port"), rtu_link, mqtt_period_s, host.
    """
    if isinstance(scenario, str) and scenario in _CATALOGUE:
        return {}
    path = Path(scenario)
    if isinstance(scenario, str) and not path.suffix:
        bundled = resources.files("simulators.scenarios").joinpath(f"{scenario}.toml")
        if not bundled.is_file():
            raise ScenarioError(f"unknown scenario {scenario!r}")
        source, text = f"{scenario}.toml", bundled.read_text(encoding="utf-8")
    else:
        try:
            source, text = str(path), path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        table = tomllib.loads(text).get("serve", {})
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: TOML syntax error: {exc}") from None
    if not isinstance(table, dict):
        raise ScenarioError(f"{source}.serve: must be a table")
    _unknown(f"{source}: serve", table, _SERVE_KEYS)
    return dict(table)
