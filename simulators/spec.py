"""Scenario records: devices, balance groups, injected conditions and ground truth.

A `Scenario` is a whole simulated site (a fuel station, a utility district or
both) plus the conditions injected into it (cheating, drift, faults). Every
condition becomes one `GroundTruth` record, so an evaluation knows which
device misbehaved, how, from when and by how much.

Failure modes handled: a condition naming an unknown device or a label that
does not fit the device's kind, duplicate device ids, and groups naming
unknown devices all raise `ScenarioError` naming the scenario and the item.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from drivers.reading import DeviceKind

NS_PER_S = 1_000_000_000
DAY_S = 86_400

ParamValue = float | int | str | bool


class ScenarioError(ValueError):
    """A scenario is inconsistent; the message names the scenario and the item."""


class Transport(StrEnum):
    """How a simulated device is served."""

    MODBUS = "modbus"  # Modbus TCP (and the RTU pty, when enabled), by unit id
    MQTT = "mqtt"  # published to a broker topic


class Label(StrEnum):
    """The closed set of injected conditions (ground-truth labels)."""

    OVER_REGISTRATION = "over_registration"
    INTERMITTENT_OVER_REGISTRATION = "intermittent_over_registration"
    CALIBRATION_CHANGE = "calibration_change"
    TOTALIZER_ROLLBACK = "totalizer_rollback"
    TRANSACTION_MISMATCH = "transaction_mismatch"
    TANK_LEAK = "tank_leak"
    CT_BYPASS = "ct_bypass"
    REVERSE_ENERGY = "reverse_energy"
    VOLTAGE_LOSS = "voltage_loss"
    REGISTER_SLOWED = "register_slowed"
    MAGNET_EVENT = "magnet_event"
    COVER_EVENT = "cover_event"
    REVERSE_FLOW = "reverse_flow"
    MAGNET_CONSUMPTION_DROP = "magnet_consumption_drop"
    STUCK_REGISTER = "stuck_register"
    GAS_WRONG_TEMPERATURE = "gas_wrong_temperature"
    SLOW_DRIFT = "slow_drift"
    COMM_LOSS = "comm_loss"
    CLOCK_SKEW = "clock_skew"


_ANY = frozenset(DeviceKind)
_METERS = frozenset({DeviceKind.ELECTRICITY, DeviceKind.WATER, DeviceKind.GAS})

LABEL_KINDS: Mapping[Label, frozenset[DeviceKind]] = MappingProxyType(
    {
        Label.OVER_REGISTRATION: frozenset({DeviceKind.DISPENSER_NOZZLE}),
        Label.INTERMITTENT_OVER_REGISTRATION: frozenset({DeviceKind.DISPENSER_NOZZLE}),
        Label.CALIBRATION_CHANGE: frozenset({DeviceKind.DISPENSER_NOZZLE}),
        Label.TOTALIZER_ROLLBACK: frozenset({DeviceKind.DISPENSER_NOZZLE}),
        Label.TRANSACTION_MISMATCH: frozenset({DeviceKind.DISPENSER_NOZZLE}),
        Label.TANK_LEAK: frozenset({DeviceKind.TANK_GAUGE}),
        Label.CT_BYPASS: frozenset({DeviceKind.ELECTRICITY}),
        Label.REVERSE_ENERGY: frozenset({DeviceKind.ELECTRICITY}),
        Label.VOLTAGE_LOSS: frozenset({DeviceKind.ELECTRICITY}),
        Label.REGISTER_SLOWED: frozenset({DeviceKind.ELECTRICITY}),
        Label.MAGNET_EVENT: frozenset({DeviceKind.ELECTRICITY}),
        Label.COVER_EVENT: frozenset({DeviceKind.ELECTRICITY}),
        Label.REVERSE_FLOW: frozenset({DeviceKind.WATER}),
        Label.MAGNET_CONSUMPTION_DROP: frozenset({DeviceKind.WATER}),
        Label.STUCK_REGISTER: _METERS,
        Label.GAS_WRONG_TEMPERATURE: frozenset({DeviceKind.GAS}),
        Label.SLOW_DRIFT: _METERS | {DeviceKind.DISPENSER_NOZZLE},
        Label.COMM_LOSS: _ANY,
        Label.CLOCK_SKEW: _ANY,
    }
)

# Detector names of `anomaly.engine` expected to catch each label (its stable
# `family.name` strings). Evaluation scores recall against these; a label with
# no entry is one no detector is known to catch yet.
DETECTORS_EXPECTED: Mapping[Label, tuple[str, ...]] = MappingProxyType(
    {
        Label.OVER_REGISTRATION: (
            "reconciliation.tank_nozzle_step",
            "reconciliation.tank_nozzle_error",
        ),
        Label.INTERMITTENT_OVER_REGISTRATION: (
            "reconciliation.tank_nozzle_step",
            "reconciliation.tank_nozzle_error",
        ),
        Label.CALIBRATION_CHANGE: (
            "integrity.parameter_change",
            "reconciliation.tank_nozzle_step",
            "reconciliation.tank_nozzle_error",
        ),
        Label.TOTALIZER_ROLLBACK: ("integrity.counter_rollback",),
        Label.TRANSACTION_MISMATCH: ("consistency.totalizer_transaction",),
        Label.TANK_LEAK: ("reconciliation.tank_leak",),
        Label.CT_BYPASS: ("integrity.neutral_mismatch", "reconciliation.feeder_member_error"),
        Label.REVERSE_ENERGY: ("integrity.reverse_energy",),
        Label.VOLTAGE_LOSS: ("integrity.voltage_loss",),
        Label.REGISTER_SLOWED: ("drift.register_vs_power",),
        Label.MAGNET_EVENT: ("integrity.tamper_event",),
        Label.COVER_EVENT: ("integrity.tamper_event",),
        Label.REVERSE_FLOW: ("integrity.reverse_flow",),
        Label.MAGNET_CONSUMPTION_DROP: ("behaviour.drop", "reconciliation.bulk_member_error"),
        Label.STUCK_REGISTER: ("behaviour.zeroing", "reconciliation.bulk_member_error"),
        Label.GAS_WRONG_TEMPERATURE: ("consistency.gas_conversion",),
        Label.SLOW_DRIFT: ("reconciliation.feeder_member_error",),
        Label.COMM_LOSS: ("data_quality.gap",),
        Label.CLOCK_SKEW: ("data_quality.clock_skew",),
    }
)


def expected_detectors(cond: Condition, kind: DeviceKind) -> tuple[str, ...]:
    """The detectors expected to catch `cond` on a device of `kind` (mode-aware)."""
    label = cond.label
    if label is Label.TRANSACTION_MISMATCH and cond.text("mode", "") == "unrecorded":
        return ("consistency.unrecorded_dispensing",)
    if label is Label.GAS_WRONG_TEMPERATURE and cond.text("mode", "substitute") != "substitute":
        # A drifting or stuck sensor keeps the factor consistent with what it reports.
        return ("data_quality.frozen_value",) if cond.text("mode", "") == "stuck" else ()
    if label is Label.STUCK_REGISTER and kind is DeviceKind.ELECTRICITY:
        return ("consistency.register_vs_power",)
    if label is Label.SLOW_DRIFT:
        return {
            DeviceKind.ELECTRICITY: ("reconciliation.feeder_member_error",),
            DeviceKind.WATER: ("reconciliation.bulk_member_error",),
            DeviceKind.DISPENSER_NOZZLE: ("reconciliation.tank_nozzle_error",),
        }.get(kind, ())
    return DETECTORS_EXPECTED[label]


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One simulated device.

    `true_error` is the device's metrological error as a fraction (0.002 =
    registers 0.2 % high). `params` are model parameters (see each model's
    docstring); unknown keys are ignored by the models. `step_s` overrides the
    kind's default sample interval.
    """

    id: str
    kind: DeviceKind
    profile: str
    accuracy_class: str
    true_error: float = 0.0
    transport: Transport = Transport.MODBUS
    unit_id: int | None = None
    topic: str | None = None
    params: Mapping[str, ParamValue] = field(default_factory=lambda: MappingProxyType({}))
    step_s: float | None = None

    def param(self, name: str, default: float) -> float:
        """Numeric model parameter `name`, or `default`."""
        value = self.params.get(name, default)
        if isinstance(value, str):
            raise ScenarioError(f"device {self.id}: param {name} must be a number, got {value!r}")
        return float(value)

    def text(self, name: str, default: str) -> str:
        """Text model parameter `name`, or `default`."""
        return str(self.params.get(name, default))


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """A balance group as in the gateway config: tank, feeder, bulk or check."""

    id: str
    type: str
    reference: str
    members: tuple[str, ...]
    technical_loss_pct: float = 0.0


@dataclass(frozen=True, slots=True)
class Condition:
    """A condition injected into one device from `start_s` (seconds after the run start).

    `end_s` None means until the end of the run. `magnitude` is the label's
    main size (an error fraction, a leak in L/h, a skew in seconds; see the
    catalogue). `params` refine it (phase, mode, fraction of transactions).
    """

    device: str
    label: Label
    start_s: float
    end_s: float | None = None
    magnitude: float | None = None
    params: Mapping[str, ParamValue] = field(default_factory=lambda: MappingProxyType({}))

    def active(self, t_rel_s: float) -> bool:
        """True when the condition applies at `t_rel_s` seconds after the run start."""
        return t_rel_s >= self.start_s and (self.end_s is None or t_rel_s < self.end_s)

    def param(self, name: str, default: float) -> float:
        value = self.params.get(name, default)
        if isinstance(value, str):
            raise ScenarioError(
                f"condition {self.label} on {self.device}: param {name} must be a number"
            )
        return float(value)

    def text(self, name: str, default: str) -> str:
        return str(self.params.get(name, default))


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """What really happened: `label` on `device_id` from `start_ns` (to `end_ns`)."""

    device_id: str
    label: str
    start_ns: int
    end_ns: int | None
    magnitude: float | None
    detectors_expected: tuple[str, ...]


# 2026-03-02 00:00:00 UTC, a Monday: the default run start, so runs are reproducible.
DEFAULT_START_NS = 1_772_409_600 * NS_PER_S

DEFAULT_STEP_S: Mapping[DeviceKind, float] = MappingProxyType(
    {
        DeviceKind.ELECTRICITY: 300.0,
        DeviceKind.WATER: 900.0,
        DeviceKind.GAS: 900.0,
        DeviceKind.DISPENSER_NOZZLE: 60.0,
        DeviceKind.TANK_GAUGE: 300.0,
    }
)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A simulated site with injected conditions. Build with `Scenario.checked(...)`."""

    name: str
    description: str
    devices: tuple[DeviceSpec, ...]
    groups: tuple[GroupSpec, ...] = ()
    conditions: tuple[Condition, ...] = ()
    start_ns: int = DEFAULT_START_NS
    step_s: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        ids = [d.id for d in self.devices]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ScenarioError(f"scenario {self.name}: duplicate device ids {sorted(dup)}")
        by_id = {d.id: d for d in self.devices}
        for c in self.conditions:
            dev = by_id.get(c.device)
            if dev is None:
                raise ScenarioError(
                    f"scenario {self.name}: condition {c.label} names unknown device {c.device!r}"
                )
            if dev.kind not in LABEL_KINDS[c.label]:
                raise ScenarioError(
                    f"scenario {self.name}: condition {c.label} does not apply to "
                    f"{dev.id} (a {dev.kind.value})"
                )
        for g in self.groups:
            for member in (g.reference, *g.members):
                if member not in by_id:
                    raise ScenarioError(
                        f"scenario {self.name}: group {g.id} names unknown device {member!r}"
                    )

    def device(self, device_id: str) -> DeviceSpec:
        for d in self.devices:
            if d.id == device_id:
                return d
        raise KeyError(f"scenario {self.name} has no device {device_id!r}")

    def step_for(self, spec: DeviceSpec) -> float:
        """Sample interval of `spec` in seconds (device, scenario, then kind default)."""
        if spec.step_s is not None:
            return spec.step_s
        return float(self.step_s.get(spec.kind.value, DEFAULT_STEP_S[spec.kind]))

    def conditions_for(self, device_id: str) -> tuple[Condition, ...]:
        return tuple(c for c in self.conditions if c.device == device_id)

    def truth(self) -> list[GroundTruth]:
        """One ground-truth record per injected condition."""
        out = []
        kinds = {d.id: d.kind for d in self.devices}
        for c in self.conditions:
            out.append(
                GroundTruth(
                    device_id=c.device,
                    label=c.label.value,
                    start_ns=self.start_ns + round(c.start_s * NS_PER_S),
                    end_ns=None if c.end_s is None else self.start_ns + round(c.end_s * NS_PER_S),
                    magnitude=c.magnitude,
                    detectors_expected=expected_detectors(c, kinds[c.device]),
                )
            )
        return out
