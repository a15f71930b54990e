"""What to connect to (links) and what to read there (devices). Plain data, no I/O.

The gateway maps its config onto these; the drivers never see the config.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import KW_ONLY, dataclass
from enum import StrEnum
from pathlib import Path

from drivers.profiles import Profile, ProfileProtocol

PHASE_STEP_S = 0.01
"""Granularity of the default poll phases: coarse enough that the devices of a
step share one wake-up (and, behind a gateway, one write), fine enough that a
step's polls take a small part of it."""


@dataclass(frozen=True, slots=True)
class TcpLink:
    """A Modbus TCP endpoint (a device, or a gateway with unit ids behind it).

    Its devices are spread round-robin over `max_connections` connections. On
    each, up to `max_in_flight` requests are outstanding, matched by
    transaction id. The default 1 is what every device handles (pymodbus's
    own server mishandles pipelined requests); raise it for gateways that
    pipeline, so a slow unit does not hold up the others on its connection.
    A connection on which a request timed out and nothing at all has arrived
    for `reconnect_when_silent_s` is replaced (it may be half-open).
    """

    host: str
    port: int = 502
    _: KW_ONLY
    timeout_s: float = 1.0
    max_in_flight: int = 1
    max_connections: int = 1
    reconnect_when_silent_s: float = 30.0

    def describe(self) -> str:
        return f"tcp://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RtuOverTcpLink:
    """RTU frames over a TCP stream (a serial gateway): one request at a time."""

    host: str
    port: int = 502
    _: KW_ONLY
    timeout_s: float = 1.0
    inter_frame_delay_s: float = 0.00175

    def describe(self) -> str:
        return f"rtu+tcp://{self.host}:{self.port}"


class Parity(StrEnum):
    NONE = "N"
    EVEN = "E"
    ODD = "O"


@dataclass(frozen=True, slots=True)
class SerialLink:
    """A half-duplex RS-485 line. `inter_frame_delay_s` None = t3.5 for the baud rate."""

    port: str
    _: KW_ONLY
    baudrate: int = 9600
    parity: Parity | str = Parity.NONE
    stopbits: int = 1
    bytesize: int = 8
    timeout_s: float = 1.0
    inter_frame_delay_s: float | None = None

    def describe(self) -> str:
        return f"serial://{self.port}@{self.baudrate}"


class MqttProtocolVersion(StrEnum):
    V5 = "5"
    V311 = "3.1.1"


@dataclass(frozen=True, slots=True)
class MqttLink:
    """An MQTT broker. A fixed `client_id` plus QoS >= 1 gives a persistent session:
    messages published while the gateway is away are delivered on reconnect."""

    host: str
    port: int = 1883
    _: KW_ONLY
    protocol: MqttProtocolVersion | str = MqttProtocolVersion.V5
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | str | None = None
    keepalive_s: int = 30
    qos: int = 1
    session_expiry_s: int = 7 * 24 * 3600
    backoff_cap_s: float = 30.0

    def describe(self) -> str:
        return f"mqtt{'s' if self.tls else ''}://{self.host}:{self.port}"

    def __repr__(self) -> str:  # never show the password
        return (
            f"MqttLink(host={self.host!r}, port={self.port}, client_id={self.client_id!r}, "
            f"username={self.username!r}, tls={self.tls})"
        )


@dataclass(frozen=True, slots=True)
class PolledDevice:
    """A Modbus device polled every `poll_interval_s`, aligned to the wall clock.

    Polls fall due at ``k * poll_interval_s + phase`` seconds after the epoch:
    a fixed grid per device that survives restarts. The phase is `phase_s`, or
    when that is None, a stable offset derived from the device id (CRC-32 of
    the id, spread uniformly over the interval in steps of `PHASE_STEP_S`;
    devices sharing a step are woken together), so a thousand devices on the
    same interval do not all fall due in the same instant and their polls
    (and the answers, on a shared gateway or line) are spread over the
    interval. `poll_phase_s` is the phase in use. Set `phase_s=0.0` to poll on
    the exact multiples of the interval. (The anomaly engine interpolates
    counters at period boundaries, so devices need not be read in the same
    instant.)

    `timeout_s` None = the link's; it should be below the interval (the config
    checks that), else a slow poll skips ticks. Retries happen only after a timeout or
    exception 06 (busy). After `down_after` consecutive failed polls the
    device is probed with a capped (`backoff_cap_s`), jittered delay.
    `first_seq` None = milliseconds since the epoch at start, so sequence
    numbers keep increasing across gateway restarts.
    """

    id: str
    profile: Profile
    unit_id: int = 1
    _: KW_ONLY
    poll_interval_s: float = 10.0
    timeout_s: float | None = None
    retries: int = 1
    max_block_registers: int = 125
    max_gap_registers: int = 16
    down_after: int = 3
    backoff_cap_s: float = 60.0
    first_seq: int | None = None
    phase_s: float | None = None

    def __post_init__(self) -> None:
        if self.profile.protocol is not ProfileProtocol.MODBUS:
            raise ValueError(f"{self.id}: profile {self.profile.name} is not a Modbus profile")
        if self.poll_interval_s <= 0:
            raise ValueError(f"{self.id}: poll_interval_s must be > 0")
        if not 0 <= self.unit_id <= 255:
            raise ValueError(f"{self.id}: unit_id must be 0..255")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"{self.id}: timeout_s must be > 0")
        if self.phase_s is not None and not 0 <= self.phase_s < self.poll_interval_s:
            raise ValueError(f"{self.id}: phase_s must be >= 0 and below poll_interval_s")

    @property
    def poll_phase_s(self) -> float:
        """Seconds after each multiple of the interval at which this device's polls fall due."""
        if self.phase_s is not None:
            return self.phase_s
        steps = max(1, math.floor(self.poll_interval_s / PHASE_STEP_S))
        step = zlib.crc32(self.id.encode()) * steps >> 32
        return step * self.poll_interval_s / steps


@dataclass(frozen=True, slots=True)
class SubscribedDevice:
    """An MQTT device: `topic` fills ``{topic}`` in the profile's topic templates."""

    id: str
    profile: Profile
    topic: str
    _: KW_ONLY
    first_seq: int | None = None

    def __post_init__(self) -> None:
        if self.profile.protocol is not ProfileProtocol.MQTT:
            raise ValueError(f"{self.id}: profile {self.profile.name} is not an MQTT profile")
