"""Device profiles: which registers or payload paths map to which canonical fields.

A profile is a TOML file named ``<name>.toml``. The shipped ones live next to
this module; users add their own in extra directories (config
``profile_dirs``), which are searched first, so a user file can also replace
a shipped profile. A Modbus profile looks like::

    description = "..."
    kind = "electricity"          # a DeviceKind
    protocol = "modbus"
    address_base = 0              # 0, 1, 30001, 40001: what the manual prints
    [defaults]                    # optional: function, type, order, scale, ...
    function = 4
    type = "f32"
    order = "ABCD"                # or word_order/byte_order = "big"|"little"
    [fields]
    voltage_l1_v = { address = 0x0000, unit = "V" }
    status_bits = { address = 7, type = "u16" }
    reverse_flow_flag = { address = 7, type = "u16", bit = 0 }

An MQTT profile has ``protocol = "mqtt"``, a ``decoder`` (json, tasmota,
shelly_gen2), ``topics`` templates containing ``{topic}`` (the device's
topic) and fields with a ``path`` such as ``ENERGY.Total`` or ``a.b[0]``.
``kind = "any"`` makes a generic profile whose fields are the canonical
fields of the kind it is loaded for.

Failure modes handled: unknown or ill-formed names, TOML syntax errors, type
errors, a register count that does not match the data type, bit fields that
do not fit, addresses below the addressing base or past 65535, field names
that are not canonical for the kind, units that differ from the canonical
unit, and a profile used for the wrong device kind. Every problem is raised
as one `ProfileError` naming the file and the field.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drivers.codec import DataType, Order, register_count, spec_problem
from drivers.errors import ProfileError
from drivers.fields import CANONICAL_FIELDS
from drivers.reading import DeviceKind

__all__ = [
    "BUILTIN_DIR",
    "ModbusField",
    "MqttField",
    "MqttSpec",
    "PayloadDecoder",
    "Profile",
    "ProfileProtocol",
    "available_profiles",
    "check_profile_name",
    "load_profile",
    "load_profile_file",
]

BUILTIN_DIR = Path(__file__).resolve().parent
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
_SEGMENT = re.compile(r"([^.\[\]]+)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")


class ProfileProtocol(StrEnum):
    MODBUS = "modbus"
    MQTT = "mqtt"


class PayloadDecoder(StrEnum):
    """How an MQTT payload is turned into fields (see `drivers.payloads`)."""

    JSON = "json"  # paths from the top-level JSON object
    TASMOTA = "tasmota"  # paths relative to the ENERGY object; LWT Online/Offline
    SHELLY_GEN2 = "shelly_gen2"  # status/em1:0-style objects (or NotifyStatus params)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModbusField(_Frozen):
    """One canonical field read from registers. `address` is the 0-based wire address."""

    name: str
    function: Literal[3, 4]
    address: int = Field(ge=0, le=0xFFFF)
    data_type: DataType
    order: Order = Order.ABCD
    scale: float = 1.0
    offset: float = 0.0
    bit: int | None = None
    bit_count: int = 1
    length: int | None = None
    unit: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> ModbusField:
        problem = spec_problem(self)
        if problem:
            raise ValueError(problem)
        if self.address + self.register_count > 0x10000:
            raise ValueError(
                f"address {self.address} + {self.register_count} register(s) passes 65535"
            )
        return self

    @property
    def register_count(self) -> int:
        return register_count(self)

    @property
    def end(self) -> int:
        """One past the last register address."""
        return self.address + self.register_count

    @property
    def word_order(self) -> str:
        return self.order.word_order

    @property
    def byte_order(self) -> str:
        return self.order.byte_order


class MqttField(_Frozen):
    """One canonical field taken from a JSON payload at `path` (``a.b[0]``)."""

    name: str
    path: str
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""

    @property
    def path_parts(self) -> tuple[str | int, ...]:
        return parse_path(self.path)


class MqttSpec(_Frozen):
    decoder: PayloadDecoder
    topics: tuple[str, ...]
    fields: tuple[MqttField, ...]


class Profile(_Frozen):
    """A loaded, validated profile. Modbus fields are sorted by (function, address)."""

    name: str
    kind: DeviceKind
    protocol: ProfileProtocol
    description: str = ""
    source: str = ""
    address_base: int = 0
    fields: tuple[ModbusField, ...] = ()
    mqtt: MqttSpec | None = None

    @property
    def field_names(self) -> tuple[str, ...]:
        if self.mqtt is not None:
            return tuple(f.name for f in self.mqtt.fields)
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> ModbusField:
        """The Modbus field `name`; ProfileError lists the known ones."""
        for f in self.fields:
            if f.name == name:
                return f
        raise ProfileError(
            f"profile {self.name} has no field {name!r} (fields: {', '.join(self.field_names)})"
        )


def parse_path(path: str) -> tuple[str | int, ...]:
    """``"ENERGY.Power[1]"`` -> ``("ENERGY", "Power", 1)``; ValueError when ill-formed."""
    parts: list[str | int] = []
    for segment in path.split("."):
        m = _SEGMENT.fullmatch(segment)
        if m is None:
            raise ValueError(f"ill-formed path {path!r}")
        parts.append(m.group(1))
        parts.extend(int(i) for i in _INDEX.findall(m.group(2)))
    return tuple(parts)


# --- file schema ------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Defaults(_Strict):
    function: Literal[3, 4] | None = None
    type: DataType | None = None
    order: Order | None = None
    word_order: Literal["big", "little"] | None = None
    byte_order: Literal["big", "little"] | None = None
    scale: float | None = None
    offset: float | None = None


class _RawModbusField(_Defaults):
    address: int
    count: int | None = Field(None, ge=1, le=125, description="registers; strings need it")
    bit: int | None = None
    bit_count: int = 1
    unit: str | None = None


class _RawMqttField(_Strict):
    path: str
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None


class _ProfileFile(_Strict):
    description: str = ""
    kind: DeviceKind | Literal["any"]
    protocol: ProfileProtocol
    address_base: int = Field(0, ge=0, le=49999)
    defaults: _Defaults = Field(default_factory=_Defaults)
    fields: dict[str, dict[str, Any]] = Field(default_factory=dict)
    decoder: PayloadDecoder | None = None
    topics: list[str] = Field(default_factory=list)


def _order(raw: _Defaults, defaults: _Defaults) -> Order:
    for src in (raw, defaults):
        if src.order is not None:
            return src.order
        if src.word_order is not None or src.byte_order is not None:
            return Order.from_parts(
                word_order=src.word_order or "big", byte_order=src.byte_order or "big"
            )
    return Order.ABCD


def _canonical_unit_problem(kind: DeviceKind, name: str, unit: str | None) -> str | None:
    canon = CANONICAL_FIELDS[kind].get(name)
    if canon is None:
        known = ", ".join(sorted(CANONICAL_FIELDS[kind]))
        return f"{name!r} is not a canonical {kind.value} field (known: {known})"
    if unit is not None and unit != canon.unit:
        return (
            f"unit {unit!r} differs from the canonical unit {canon.unit!r} of {name}; "
            "convert with scale/offset and write the canonical unit"
        )
    return None


def _build(name: str, source: str, doc: _ProfileFile, kind: DeviceKind) -> Profile:
    problems: list[str] = []
    modbus: list[ModbusField] = []
    mqtt_fields: list[MqttField] = []
    raw_model: type[_RawModbusField | _RawMqttField] = (
        _RawMqttField if doc.protocol is ProfileProtocol.MQTT else _RawModbusField
    )
    for fname, raw_data in doc.fields.items():
        where = f"fields.{fname}"
        try:
            raw = raw_model.model_validate(raw_data)
        except ValidationError as exc:
            problems += [f"{where}.{_loc(err['loc'])}: {err['msg']}" for err in exc.errors()]
            continue
        msg = _canonical_unit_problem(kind, fname, raw.unit)
        if msg:
            problems.append(f"{where}: {msg}")
            continue
        unit = CANONICAL_FIELDS[kind][fname].unit
        if isinstance(raw, _RawMqttField):
            try:
                parse_path(raw.path)
                mqtt_fields.append(
                    MqttField(
                        name=fname, path=raw.path, scale=raw.scale, offset=raw.offset, unit=unit
                    )
                )
            except (ValueError, ValidationError) as exc:
                problems.append(f"{where}.path: {exc}")
            continue
        d = doc.defaults
        function = raw.function or d.function
        dtype = raw.type or d.type
        if function is None:
            problems.append(f"{where}.function: missing (3 holding or 4 input), no default")
            continue
        if dtype is None:
            problems.append(f"{where}.type: missing, no default")
            continue
        if dtype is not DataType.STRING and raw.count is not None and raw.count != dtype.registers:
            problems.append(
                f"{where}.count: {dtype.value} takes {dtype.registers} register(s), "
                f"not {raw.count}"
            )
            continue
        if dtype is DataType.STRING:
            problems.append(f"{where}.type: strings have no numeric value; not a field type")
            continue
        wire = raw.address - doc.address_base
        if wire < 0:
            problems.append(
                f"{where}.address: {raw.address} is below address_base {doc.address_base}"
            )
            continue
        scale = raw.scale if raw.scale is not None else (d.scale if d.scale is not None else 1.0)
        offset = raw.offset if raw.offset is not None else (d.offset or 0.0)
        try:
            modbus.append(
                ModbusField(
                    name=fname,
                    function=function,
                    address=wire,
                    data_type=dtype,
                    order=_order(raw, d),
                    scale=scale,
                    offset=offset,
                    bit=raw.bit,
                    bit_count=raw.bit_count,
                    unit=unit,
                )
            )
        except ValidationError as exc:
            problems += [f"{where}: {err['msg']}" for err in exc.errors()]
    if doc.protocol is ProfileProtocol.MQTT:
        if doc.decoder is None:
            problems.append("decoder: an mqtt profile needs a decoder (json, tasmota, shelly_gen2)")
        if not doc.topics:
            problems.append("topics: an mqtt profile needs at least one topic template")
        problems += [
            f"topics[{i}]: {t!r} must contain {{topic}}"
            for i, t in enumerate(doc.topics)
            if "{topic}" not in t
        ]
        if doc.kind == "any" and not mqtt_fields and not problems:
            mqtt_fields = [
                MqttField(name=f.name, path=f.name, unit=f.unit)
                for f in CANONICAL_FIELDS[kind].values()
            ]
    elif doc.decoder is not None or doc.topics:
        problems.append("decoder/topics: only mqtt profiles have them")
    if not problems and not modbus and not mqtt_fields:
        problems.append("fields: the profile maps no fields")
    if problems:
        raise ProfileError(f"{source}: " + "; ".join(problems))
    mqtt = None
    if doc.protocol is ProfileProtocol.MQTT:
        assert doc.decoder is not None
        mqtt = MqttSpec(decoder=doc.decoder, topics=tuple(doc.topics), fields=tuple(mqtt_fields))
    return Profile(
        name=name,
        kind=kind,
        protocol=doc.protocol,
        description=doc.description,
        source=source,
        address_base=doc.address_base,
        fields=tuple(sorted(modbus, key=lambda f: (f.function, f.address, f.bit or 0))),
        mqtt=mqtt,
    )


def _loc(loc: Sequence[int | str]) -> str:
    return ".".join(str(p) for p in loc)


def _parse_file(path: Path) -> _ProfileFile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: TOML syntax error: {exc}") from None
    try:
        return _ProfileFile.model_validate(data)
    except ValidationError as exc:
        msgs = [f"{_loc(err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()]
        raise ProfileError(f"{path}: " + "; ".join(msgs)) from None


@lru_cache(maxsize=256)
def _load_cached(path: Path, mtime_ns: int, kind: DeviceKind | None) -> Profile:
    doc = _parse_file(path)
    if doc.kind == "any":
        if kind is None:
            raise ProfileError(
                f"{path}: profile {path.stem} is generic (kind = any); load it with the "
                "device kind"
            )
        use = kind
    else:
        if kind is not None and kind is not doc.kind:
            raise ProfileError(
                f"profile {path.stem} is for {doc.kind.value} devices, not {kind.value}"
            )
        use = doc.kind
    return _build(path.stem, str(path), doc, use)


def _dirs(extra_dirs: Iterable[Path | str]) -> list[Path]:
    return [*(Path(d) for d in extra_dirs), BUILTIN_DIR]


def _find(name: str, extra_dirs: Iterable[Path | str]) -> Path:
    if not NAME_PATTERN.match(name):
        raise ProfileError(
            f"profile name {name!r} is not valid (lower-case letters, digits, underscores)"
        )
    for d in _dirs(extra_dirs):
        candidate = d / f"{name}.toml"
        if candidate.is_file():
            return candidate
    known = ", ".join(available_profiles(extra_dirs=extra_dirs))
    raise ProfileError(f"unknown profile {name!r} (available: {known})")


def load_profile(
    name: str, *, extra_dirs: Sequence[Path | str] = (), kind: DeviceKind | None = None
) -> Profile:
    """Load profile `name` from `extra_dirs` (first) or the shipped profiles.

    Pass the device's `kind` to load a generic profile (``json_generic``) and to
    check that a specific one fits the device. Raises `ProfileError`.
    """
    path = _find(name, extra_dirs)
    return _load_cached(path, path.stat().st_mtime_ns, kind)


def load_profile_file(path: Path | str, *, kind: DeviceKind | None = None) -> Profile:
    """Load and validate one profile file (for `meterwatch read --profile-file`, tests)."""
    p = Path(path).resolve()
    try:
        mtime = p.stat().st_mtime_ns
    except OSError as exc:
        raise ProfileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return _load_cached(p, mtime, kind)


def available_profiles(*, extra_dirs: Iterable[Path | str] = ()) -> list[str]:
    """Sorted names of every profile file found in `extra_dirs` and the shipped set."""
    names: set[str] = set()
    for d in _dirs(extra_dirs):
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.toml") if NAME_PATTERN.match(p.stem))
    return sorted(names)


def check_profile_name(
    name: str, kind: DeviceKind | None, extra_dirs: Iterable[Path | str]
) -> str | None:
    """None when profile `name` exists, is valid and fits `kind`; else the problem."""
    try:
        load_profile(name, extra_dirs=tuple(extra_dirs), kind=kind)
    except ProfileError as exc:
        return str(exc)
    return None


def profile_summary(profile: Profile) -> Mapping[str, Any]:
    """A JSON-able description of a profile (for `meterwatch read` and the API)."""
    return profile.model_dump(mode="json")
