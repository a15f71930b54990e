"""The one typed configuration model, loaded from a TOML file.

Secrets may come from the environment: any nested setting can be overridden
with ``MW_<SECTION>__<KEY>`` (for example ``MW_STORAGE__INFLUXDB__PASSWORD``),
and any secret value may be written as ``env:NAME`` or ``file:/path`` to be
read from an environment variable or a file at load time.

Failure modes handled: a missing or unreadable file, TOML syntax errors, type
and range errors, and cross-reference errors (unknown bus, profile or device,
duplicate ids, a timeout not below the poll interval, a group whose devices
are of the wrong kind, placeholder secrets). All problems are collected and
reported together, each with its config path such as
``devices[3].poll_interval_s``; nothing is half-loaded.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from anomaly.mpe import DEFAULT_CLASS, MPE_PCT
from drivers.reading import DeviceKind

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
Ident = Annotated[str, Field(pattern=ID_PATTERN)]

# Values people leave in configs by accident; never accepted as a secret.
PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "secret",
        "password",
        "admin",
        "root",
        "test",
        "token",
        "meterwatch",
        "default",
        "xxx",
        "12345678",
    }
)


class ConfigError(Exception):
    """The configuration is invalid. `problems` lists every ``(path, message)``."""

    def __init__(self, problems: list[tuple[str, str]], *, source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        head = f"{source}: " if source else ""
        lines = [f"{head}{len(problems)} configuration problem(s):"]
        lines += [f"  {path}: {msg}" for path, msg in problems]
        super().__init__("\n".join(lines))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve_secret(value: Any) -> Any:
    """Expand ``env:NAME`` and ``file:/path`` secret references."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        return value
    if value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise PydanticCustomError(
                "secret_env", "environment variable {name} is not set", {"name": name}
            )
        return os.environ[name]
    if value.startswith("file:"):
        path = Path(value[5:])
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PydanticCustomError(
                "secret_file",
                "cannot read secret file {path}: {err}",
                {"path": str(path), "err": exc.strerror or str(exc)},
            ) from None
    return value


def _no_placeholder(value: SecretStr) -> SecretStr:
    if value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
        raise PydanticCustomError(
            "placeholder_secret", "is empty or a well-known placeholder; set a real secret"
        )
    return value


Secret = Annotated[SecretStr, BeforeValidator(_resolve_secret), AfterValidator(_no_placeholder)]
"""A secret: ``env:NAME`` / ``file:/path`` are expanded; placeholders are refused."""


# --- site --------------------------------------------------------------------------


class SiteSettings(_Strict):
    id: Ident = "site"
    name: str = ""
    timezone: str = "UTC"


# --- buses -------------------------------------------------------------------------


class Transport(StrEnum):
    TCP = "tcp"
    RTU = "rtu"
    RTU_OVER_TCP = "rtu_over_tcp"
    MQTT = "mqtt"


class Parity(StrEnum):
    NONE = "N"
    EVEN = "E"
    ODD = "O"


class ModbusTcpBus(_Strict):
    """A Modbus TCP endpoint (a device or a gateway with unit ids behind it)."""

    id: Ident
    transport: Literal[Transport.TCP, Transport.RTU_OVER_TCP]
    host: str
    port: int = Field(502, ge=1, le=65535)
    timeout_s: float = Field(1.0, gt=0, le=60)
    max_connections: int = Field(
        1, ge=1, le=16, description="connections to open; devices are spread over them"
    )
    max_in_flight: int = Field(
        1, ge=1, le=16, description="pipelined requests per connection (only if the peer copes)"
    )


class SerialBus(_Strict):
    """A half-duplex RS-485 bus: strictly one request at a time."""

    id: Ident
    transport: Literal[Transport.RTU]
    serial_port: str
    baudrate: int = Field(9600, ge=300, le=921600)
    parity: Parity = Parity.NONE
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout_s: float = Field(1.0, gt=0, le=60)
    inter_frame_delay_s: float | None = Field(
        None, ge=0, le=1, description="silence between frames; default t3.5 for the baud rate"
    )


class MqttProtocol(StrEnum):
    V5 = "5"
    V311 = "3.1.1"


class MqttBus(_Strict):
    """An MQTT broker devices publish to."""

    id: Ident
    transport: Literal[Transport.MQTT]
    host: str
    port: int = Field(1883, ge=1, le=65535)
    protocol: MqttProtocol = MqttProtocol.V5
    client_id: str | None = None
    username: str | None = None
    password: Secret | None = None
    tls: bool = False
    ca_file: Path | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    qos: Literal[0, 1, 2] = 1
    timeout_s: float = Field(5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _auth_pair(self) -> MqttBus:
        if self.password is not None and not self.username:
            raise PydanticCustomError("auth", "password is set but username is not")
        return self


Bus = Annotated[ModbusTcpBus | SerialBus | MqttBus, Field(discriminator="transport")]


# --- devices -----------------------------------------------------------------------


class DeviceSettings(_Strict):
    """One polled (Modbus) or subscribed (MQTT) device."""

    id: Ident
    kind: DeviceKind
    profile: str = Field(min_length=1)
    bus: Ident
    unit_id: int | None = Field(None, ge=0, le=255, description="Modbus unit (slave) id")
    topic: str | None = Field(None, description="MQTT topic (prefix) for this device")
    poll_interval_s: float = Field(10.0, gt=0, le=86400)
    timeout_s: float | None = Field(None, gt=0, le=60, description="default: the bus timeout")
    poll_phase_s: float | None = Field(
        None,
        ge=0,
        description="offset of the poll within each interval; default a stable spread "
        "derived from the device id (so many devices do not fall due at once), 0 = on "
        "the interval boundary",
    )
    retries: int = Field(1, ge=0, le=5)
    max_block_registers: int = Field(125, ge=1, le=125)
    max_gap_registers: int = Field(16, ge=0, le=125)
    accuracy_class: str | None = None
    mpe_pct: float | None = Field(None, gt=0, le=50, description="overrides the class MPE")
    threshold_mpe_fraction: float = Field(
        1.0, gt=0, le=10, description="alert when the estimated error exceeds this x MPE"
    )
    export_expected: bool = Field(
        False, description="a prosumer meter: its export register may rise (no reverse alert)"
    )
    site: Ident | None = Field(None, description="default: site.id")
    enabled: bool = True

    @property
    def effective_mpe_pct(self) -> float:
        if self.mpe_pct is not None:
            return self.mpe_pct
        cls = self.accuracy_class or DEFAULT_CLASS[self.kind.value]
        return MPE_PCT[self.kind.value][cls]


# --- balance groups ----------------------------------------------------------------


class GroupType(StrEnum):
    TANK = "tank"  # tank gauge -> nozzles drawing from it
    FEEDER = "feeder"  # feeder (head) meter -> customer electricity meters
    BULK = "bulk"  # bulk water/gas meter -> district meters
    CHECK = "check"  # check meter in series with one meter


_GROUP_KINDS: Mapping[GroupType, tuple[frozenset[DeviceKind], frozenset[DeviceKind]]] = {
    GroupType.TANK: (frozenset({DeviceKind.TANK_GAUGE}), frozenset({DeviceKind.DISPENSER_NOZZLE})),
    GroupType.FEEDER: (frozenset({DeviceKind.ELECTRICITY}), frozenset({DeviceKind.ELECTRICITY})),
    GroupType.BULK: (
        frozenset({DeviceKind.WATER, DeviceKind.GAS}),
        frozenset({DeviceKind.WATER, DeviceKind.GAS}),
    ),
    GroupType.CHECK: (frozenset(DeviceKind), frozenset(DeviceKind)),
}


class GroupSettings(_Strict):
    id: Ident
    type: GroupType
    reference: Ident = Field(description="tank gauge, feeder, bulk or check meter")
    members: list[Ident] = Field(min_length=1)
    technical_loss_pct: float = Field(0.0, ge=0, le=30, description="expected loss (feeders)")

    @model_validator(mode="after")
    def _check_one(self) -> GroupSettings:
        if self.type is GroupType.CHECK and len(self.members) != 1:
            raise PydanticCustomError("check_members", "a check group has exactly one member")
        return self


# --- storage -----------------------------------------------------------------------


class StorageBackend(StrEnum):
    EMBEDDED = "embedded"
    INFLUXDB_V1 = "influxdb_v1"
    INFLUXDB_V2 = "influxdb_v2"


class InfluxSettings(_Strict):
    url: str = "http://127.0.0.1:8086"
    database: str = "meterwatch"
    retention_policy: str | None = None
    username: str | None = None
    password: Secret | None = None
    token: Secret | None = None
    org: str | None = None
    bucket: str | None = None
    batch_size: int = Field(5000, ge=1, le=100_000)
    flush_interval_s: float = Field(1.0, gt=0, le=60)
    timeout_s: float = Field(10.0, gt=0, le=300)
    gzip: bool = True
    verify_tls: bool = True
    create_database: bool = Field(True, description="CREATE DATABASE at start (v1 API)")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise PydanticCustomError("url", "must be an http:// or https:// URL")
        return value.rstrip("/")


class StorageSettings(_Strict):
    backend: StorageBackend = StorageBackend.EMBEDDED
    data_dir: Path = Path("/var/lib/meterwatch")
    retention_days: int = Field(400, ge=1, le=36500)
    raw_retention_days: int = Field(
        90, ge=1, le=36500, description="embedded store: raw readings; roll-ups keep retention_days"
    )
    outbox_max_mb: float = Field(512, gt=0, le=1_000_000)
    influxdb: InfluxSettings = InfluxSettings()

    @model_validator(mode="after")
    def _influx_auth(self) -> StorageSettings:
        influx = self.influxdb
        if self.backend is StorageBackend.INFLUXDB_V2 and not (
            influx.token and influx.org and influx.bucket
        ):
            raise PydanticCustomError(
                "influx_v2",
                "backend influxdb_v2 needs influxdb.token, influxdb.org and influxdb.bucket",
            )
        if influx.username and influx.password is None:
            raise PydanticCustomError("influx_auth", "influxdb.username is set but not password")
        return self


# --- API ---------------------------------------------------------------------------


class Role(StrEnum):
    INSPECTOR = "inspector"
    ENFORCEMENT = "enforcement"
    ADMIN = "admin"


class ApiKeySettings(_Strict):
    """An API key, stored as the SHA-256 hex digest of the key (never the key)."""

    name: Ident
    role: Role
    sites: list[str] = Field(default_factory=lambda: ["*"])
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ApiSettings(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    keys: list[ApiKeySettings] = Field(default_factory=list)
    max_page_size: int = Field(500, ge=1, le=10_000)
    max_body_bytes: int = Field(65_536, ge=1024, le=10_000_000)
    auth_failures_per_minute: int = Field(10, ge=1, le=10_000)


# --- alerts ------------------------------------------------------------------------


class WebhookSettings(_Strict):
    url: str = Field(pattern=r"^https?://")
    secret: Secret
    min_severity: Literal["info", "warning", "critical"] = "warning"
    timeout_s: float = Field(5.0, gt=0, le=60)

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise PydanticCustomError("short_secret", "must be at least 16 characters")
        return value


class MaintenanceWindow(_Strict):
    device: str = Field(description="device id or '*'")
    start: str = Field(description="ISO 8601 date-time; without an offset: the site's time zone")
    end: str = Field(description="ISO 8601 date-time, after start")
    reason: str = ""

    @field_validator("start", "end")
    @classmethod
    def _iso(cls, value: str) -> str:
        from datetime import datetime

        try:
            datetime.fromisoformat(value.strip())
        except ValueError:
            raise PydanticCustomError(
                "datetime", "not an ISO 8601 date-time (like 2026-11-28T08:00:00Z)"
            ) from None
        return value


class AlertSettings(_Strict):
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    mqtt_bus: Ident | None = Field(None, description="bus id of the broker to publish alerts on")
    mqtt_topic: str = "meterwatch/{site}/alerts"
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    ledger_signing_key: Secret | None = Field(
        None, description="Ed25519 private key (hex, 32 bytes) for signed tree heads"
    )


# --- anomaly / logging -------------------------------------------------------------


class AnomalySettings(_Strict):
    enabled: bool = True
    state_save_interval_s: float = Field(60.0, gt=0, le=86400)


class LogSettings(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = Field(False, alias="json")


# --- the whole -----------------------------------------------------------------------


class Settings(BaseSettings):
    """The whole configuration. Build it with `load_config` (or `Settings.model_validate`)."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix="MW_",
        env_nested_delimiter="__",
        populate_by_name=True,
    )

    site: SiteSettings = SiteSettings()
    buses: list[Bus] = Field(default_factory=list)
    devices: list[DeviceSettings] = Field(default_factory=list)
    groups: list[GroupSettings] = Field(default_factory=list)
    profile_dirs: list[Path] = Field(default_factory=list)
    storage: StorageSettings = StorageSettings()
    api: ApiSettings = ApiSettings()
    alerts: AlertSettings = AlertSettings()
    anomaly: AnomalySettings = AnomalySettings()
    logging: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (passed as init kwargs).
        return (env_settings, init_settings)

    @model_validator(mode="wrap")
    @classmethod
    def _cross_check(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Settings:
        """Run field validation and the cross-reference checks, and report both together."""
        details: list[InitErrorDetails] = []
        result: Settings | None = None
        try:
            result = handler(data)
        except ValidationError as exc:
            for err in exc.errors():
                details.append(
                    InitErrorDetails(
                        type=PydanticCustomError(err["type"], _brace_safe(err["msg"])),
                        loc=err["loc"],
                        input=err.get("input"),
                    )
                )
        if isinstance(data, Mapping):
            for loc, msg in _semantic_problems(data):
                details.append(
                    InitErrorDetails(
                        type=PydanticCustomError("config", _brace_safe(msg)), loc=loc, input=None
                    )
                )
        if details:
            raise ValidationError.from_exception_data(cls.__name__, details)
        assert result is not None
        return result

    # --- derived views -----------------------------------------------------------

    def bus(self, bus_id: str) -> ModbusTcpBus | SerialBus | MqttBus:
        for bus in self.buses:
            if bus.id == bus_id:
                return bus
        raise KeyError(bus_id)

    def device(self, device_id: str) -> DeviceSettings:
        for dev in self.devices:
            if dev.id == device_id:
                return dev
        raise KeyError(device_id)

    def device_site(self, device: DeviceSettings) -> str:
        return device.site or self.site.id

    def device_timeout_s(self, device: DeviceSettings) -> float:
        return device.timeout_s if device.timeout_s is not None else self.bus(device.bus).timeout_s


def _brace_safe(msg: str) -> str:
    return msg.replace("{", "{{").replace("}", "}}")


# --- semantic (cross-reference) checks on the raw data -------------------------------

Loc = tuple[str | int, ...]


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    return value if isinstance(value, list) else []


# Hook for the profile registry: returns None if the profile exists, or a message.
ProfileChecker = Callable[[str, DeviceKind | None, list[Path]], str | None]
_profile_checker: ProfileChecker | None = None


def set_profile_checker(checker: ProfileChecker | None) -> None:
    """Install the function that checks `devices[i].profile` (set by the drivers registry)."""
    global _profile_checker  # noqa: PLW0603
    _profile_checker = checker


def _semantic_problems(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    buses = _list(data, "buses")
    devices = _list(data, "devices")
    groups = _list(data, "groups")

    for section, items in (("buses", buses), ("devices", devices), ("groups", groups)):
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if isinstance(item, Mapping) and isinstance(item.get("id"), str):
                if item["id"] in seen:
                    problems.append(
                        (
                            (section, i, "id"),
                            f"duplicate id {item['id']!r} "
                            f"(first used at {section}[{seen[item['id']]}])",
                        )
                    )
                seen.setdefault(item["id"], i)

    bus_by_id = {
        b["id"]: b for b in buses if isinstance(b, Mapping) and isinstance(b.get("id"), str)
    }
    profile_dirs = [Path(p) for p in _list(data, "profile_dirs") if isinstance(p, str)]
    for i, dev in enumerate(devices):
        if not isinstance(dev, Mapping):
            continue
        bus_id = dev.get("bus")
        bus = bus_by_id.get(bus_id) if isinstance(bus_id, str) else None
        if isinstance(bus_id, str) and bus is None:
            known = ", ".join(sorted(bus_by_id)) or "none defined"
            problems.append(((("devices", i, "bus")), f"no bus named {bus_id!r} (known: {known})"))
        if bus is not None:
            transport = bus.get("transport")
            if transport == "mqtt" and not dev.get("topic"):
                problems.append((("devices", i, "topic"), "an MQTT device needs a topic"))
            if transport in ("tcp", "rtu", "rtu_over_tcp") and dev.get("unit_id") is None:
                problems.append((("devices", i, "unit_id"), "a Modbus device needs a unit_id"))
            if transport == "rtu" and dev.get("unit_id") == 0:
                problems.append(
                    (("devices", i, "unit_id"), "unit 0 is the RTU broadcast address; use 1-247")
                )
            interval = dev.get("poll_interval_s", 10.0)
            phase = dev.get("poll_phase_s")
            if (
                isinstance(phase, int | float)
                and isinstance(interval, int | float)
                and 0 < interval <= phase
            ):
                problems.append(
                    (
                        ("devices", i, "poll_phase_s"),
                        f"the poll phase ({phase} s) must be "
                        f"below the poll interval ({interval} s)",
                    )
                )
            timeout = dev.get(
                "timeout_s", bus.get("timeout_s", 5.0 if transport == "mqtt" else 1.0)
            )
            if (
                transport != "mqtt"
                and isinstance(interval, int | float)
                and isinstance(timeout, int | float)
                and 0 < interval <= timeout
            ):
                where = "timeout_s" if "timeout_s" in dev else "poll_interval_s"
                problems.append(
                    (
                        ("devices", i, where),
                        f"the request timeout ({timeout} s) must be below "
                        f"the poll interval ({interval} s)",
                    )
                )
        kind_value, cls = dev.get("kind"), dev.get("accuracy_class")
        if (
            isinstance(cls, str)
            and isinstance(kind_value, str)
            and kind_value in MPE_PCT
            and dev.get("mpe_pct") is None
        ):
            known_classes = MPE_PCT[kind_value]
            if cls not in known_classes:
                problems.append(
                    (
                        ("devices", i, "accuracy_class"),
                        f"unknown class {cls!r} for {kind_value} "
                        f"(known: {', '.join(known_classes)}); or set mpe_pct",
                    )
                )
        profile = dev.get("profile")
        if _profile_checker is not None and isinstance(profile, str) and profile:
            try:
                kind: DeviceKind | None = DeviceKind(str(dev.get("kind")))
            except ValueError:
                kind = None
            msg = _profile_checker(profile, kind, profile_dirs)
            if msg:
                problems.append((("devices", i, "profile"), msg))

    dev_by_id = {
        d["id"]: d for d in devices if isinstance(d, Mapping) and isinstance(d.get("id"), str)
    }
    for i, grp in enumerate(groups):
        if not isinstance(grp, Mapping):
            continue
        try:
            gtype = GroupType(str(grp.get("type")))
        except ValueError:
            continue
        ref_kinds, member_kinds = _GROUP_KINDS[gtype]
        refs: list[tuple[Loc, Any, frozenset[DeviceKind]]] = [
            (("groups", i, "reference"), grp.get("reference"), ref_kinds)
        ]
        refs += [
            (("groups", i, "members", j), m, member_kinds)
            for j, m in enumerate(
                grp.get("members", []) if isinstance(grp.get("members"), list) else []
            )
        ]
        for loc, dev_id, kinds in refs:
            if not isinstance(dev_id, str):
                continue
            dev = dev_by_id.get(dev_id)
            if dev is None:
                problems.append((loc, f"no device named {dev_id!r}"))
                continue
            kind_value = dev.get("kind")
            if kind_value not in {k.value for k in kinds}:
                wanted = " or ".join(sorted(k.value for k in kinds))
                problems.append(
                    (
                        loc,
                        f"device {dev_id!r} is a {kind_value}; "
                        f"a {gtype.value} group needs {wanted}",
                    )
                )

    alerts = data.get("alerts")
    if isinstance(alerts, Mapping) and isinstance(alerts.get("mqtt_bus"), str):
        bus = bus_by_id.get(alerts["mqtt_bus"])
        if bus is None or bus.get("transport") != "mqtt":
            problems.append((("alerts", "mqtt_bus"), f"no MQTT bus named {alerts['mqtt_bus']!r}"))
    return problems


# --- loading -------------------------------------------------------------------------


def format_loc(loc: Iterable[str | int]) -> str:
    """``("devices", 3, "poll_interval_s")`` -> ``devices[3].poll_interval_s``.

    Discriminator tags that pydantic inserts for unions (``buses[0].tcp.port``)
    are dropped, since they are not part of the file.
    """
    out = ""
    transports = {t.value for t in Transport}
    prev: str | int | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(prev, int) and part in transports:
            pass
        else:
            out += f".{part}" if out else str(part)
        prev = part
    return out or "(top level)"


def problems_from(exc: ValidationError) -> list[tuple[str, str]]:
    """Every ``(path, message)`` of a validation error, sorted by path, without repeats."""
    seen: set[tuple[str, str]] = set()
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting (check the spelling)"
        item = (format_loc(err["loc"]), msg)
        if item not in seen:
            seen.add(item)
            out.append(item)
    return sorted(out, key=lambda item: _natural(item[0]))


def _natural(path: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def parse_config(data: Mapping[str, Any], *, source: str | None = None) -> Settings:
    """Validate a config mapping. Raises `ConfigError` listing every problem."""
    _install_profile_checker()
    try:
        return Settings(**dict(data))
    except ValidationError as exc:
        raise ConfigError(problems_from(exc), source=source) from None


def load_config(path: str | Path) -> Settings:
    """Read and validate a TOML config file. Raises `ConfigError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [("(file)", f"cannot read: {exc.strerror or exc}")], source=str(path)
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("(file)", f"TOML syntax error: {exc}")], source=str(path)) from None
    # Relative paths in the file are relative to the file, not the working directory.
    base = path.parent.resolve()
    if isinstance(data.get("profile_dirs"), list):
        data["profile_dirs"] = [
            str(base / p) if isinstance(p, str) else p for p in data["profile_dirs"]
        ]
    storage = data.get("storage")
    if isinstance(storage, dict) and isinstance(storage.get("data_dir"), str):
        storage["data_dir"] = str(base / storage["data_dir"])
    return parse_config(data, source=str(path))


def _install_profile_checker() -> None:
    """Use the drivers' profile registry to check profile names, if it is available."""
    if _profile_checker is not None:
        return
    try:
        from drivers.profiles import check_profile_name  # type: ignore[attr-defined,unused-ignore]
    except ImportError:  # the registry is not built yet
        return
    set_profile_checker(check_profile_name)
