"""Modbus clients (thin asyncio shells around `drivers.framing`) and the bus pollers.

Clients:
- `TcpClient`: Modbus TCP, requests pipelined on one connection and matched by
  transaction id, so a device that answers slowly (or never) behind a gateway
  does not hold up the other unit ids on the same endpoint.
- `RtuClient`: RTU frames over a byte stream (a serial port or a TCP socket to
  a serial gateway): strictly one request at a time, with the inter-frame
  delay between frames, and the input flushed before each request so a late
  answer to a timed-out request is never taken for the next one.

Pollers (`poll_tcp_bus`, `poll_sequential_bus`):
- polls are aligned to the wall clock: each device on its own fixed grid,
  every multiple of the interval plus a stable per-device phase
  (`PolledDevice.poll_phase_s`, by default spread over the interval by a hash
  of the device id, so many devices do not all fall due in one instant and
  burst the CPU and the line); a poll that overruns skips ticks instead of
  queueing them;
- each request has a timeout below the interval; retries only after a
  timeout or exception 06 (busy);
- after `down_after` failed polls a device is probed with a capped,
  jittered, doubling delay; its failure and its recovery are logged once;
- a lost link is reopened with capped jittered backoff, logged once per outage;
- every poll yields a `Reading` with a per-device sequence number; a failed
  poll yields an empty reading with a bad quality (timeout,
  ``exception:<code>``, decode_error, disconnected).

Failure modes handled: connect refused/timeout, connection dropped mid-request
(all outstanding requests fail at once), a silent device, a late answer, a
garbled stream (reset), Modbus exceptions, serial port missing or unplugged,
and a sink that raises (logged once, the bus keeps running).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import random
import struct
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

from drivers.codec import compile_decoder
from drivers.errors import (
    DecodeError,
    DeviceTimeoutError,
    DriverError,
    ModbusExceptionError,
    TransportError,
)
from drivers.framing import (
    FrameError,
    MbapDecoder,
    mbap_frame,
    parse_read_response,
    parse_rtu_response,
    read_request_pdu,
    rtu_frame,
    rtu_inter_frame_delay_s,
    rtu_response_length,
)
from drivers.links import PolledDevice, RtuOverTcpLink, SerialLink, TcpLink
from drivers.planner import ReadBlock, plan_reads
from drivers.reading import Quality, Reading, exception_quality
from drivers.status import BusStatus, DeviceState, DeviceStatus

log = logging.getLogger("meterwatch.drivers.modbus")

Sink = Callable[[Reading], None]
EXC_BUSY = 6
_REFUSED = (1, 2)  # illegal function / illegal data address: the map, not the moment
_REPROBE_REFUSED_POLLS = 100
_BUSY_DELAY_S = 0.05


class RegisterReader(Protocol):
    """What a poller needs from a client."""

    @property
    def connected(self) -> bool: ...

    async def read(
        self,
        unit_id: int,
        function: int,
        address: int,
        count: int,
        *,
        timeout_s: float,
        device: str | None = None,
    ) -> bytes: ...

    async def close(self) -> None: ...


# --- Modbus TCP -------------------------------------------------------------------------


class _MbapProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.decoder = MbapDecoder()
        self.pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self.late_frames = 0
        self.last_rx = 0.0
        self._out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, frame: bytes) -> None:
        """Queue `frame`; all frames queued in one loop iteration go out in one write."""
        self._out.append(frame)
        if len(self._out) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and out:
            self.transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        try:
            frames = self.decoder.feed(data)
        except FrameError as exc:
            self._fail_all(exc)
            if self.transport is not None:
                self.transport.abort()
            return
        pending = self.pending
        for tid, unit, pdu in frames:
            fut = pending.pop(tid, None)
            if fut is None or fut.done():
                self.late_frames += 1  # answer to a request that already timed out
                continue
            fut.set_result((unit, pdu))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        reason = f"connection lost: {exc}" if exc else "connection closed by peer"
        self._fail_all(TransportError(reason))

    def _fail_all(self, exc: Exception) -> None:
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)


class TcpClient:
    """Modbus TCP client with pipelined requests on one connection."""

    def __init__(self, host: str, port: int, *, max_in_flight: int = 16) -> None:
        self.host = host
        self.port = port
        self._proto: _MbapProtocol | None = None
        self._tids = itertools.cycle(range(1, 0x10000))
        self._slots = asyncio.Semaphore(max_in_flight)

    @property
    def connected(self) -> bool:
        return self._proto is not None and self._proto.transport is not None

    def silent_for_s(self) -> float:
        """Seconds since anything arrived on the connection (or since it opened)."""
        if self._proto is None:
            return 0.0
        return time.monotonic() - self._proto.last_rx

    async def connect(self, *, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            _, proto = await loop.create_connection(_MbapProtocol, self.host, self.port)
        proto.last_rx = time.monotonic()
        self._proto = proto

    async def read(
        self,
        unit_id: int,
        function: int,
        address: int,
        count: int,
        *,
        timeout_s: float,
        device: str | None = None,
    ) -> bytes:
        """Register bytes of one read; DeviceTimeoutError, ModbusExceptionError, TransportError."""
        pdu = read_request_pdu(function, address, count)
        async with self._slots:
            proto = self._proto
            if proto is None or proto.transport is None:
                raise TransportError("not connected", device=device)
            tid = next(self._tids)
            while tid in proto.pending:
                tid = next(self._tids)
            fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
            proto.pending[tid] = fut
            proto.send(mbap_frame(tid, unit_id, pdu))
            try:
                async with asyncio.timeout(timeout_s):
                    unit, resp = await fut
            except TimeoutError:
                raise DeviceTimeoutError(
                    f"no answer from unit {unit_id} within {timeout_s:g} s", device=device
                ) from None
            except TransportError as exc:
                raise TransportError(str(exc), device=device) from None
            finally:
                proto.pending.pop(tid, None)
        if unit != unit_id:
            raise FrameError(f"answer from unit {unit}, expected {unit_id}", device=device)
        return parse_read_response(
            resp, function=function, count=count, unit_id=unit_id, device=device
        )

    async def close(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()


# --- RTU over a byte stream --------------------------------------------------------------


class _ByteSink(Protocol):
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    @property
    def is_open(self) -> bool: ...


class _StreamProtocol(asyncio.Protocol):
    """Collects bytes for `RtuClient` from a TCP stream."""

    def __init__(self, client: RtuClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.client.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.client.lost(exc)


class _TcpByteSink:
    def __init__(self, proto: _StreamProtocol) -> None:
        self.proto = proto

    def write(self, data: bytes) -> None:
        if self.proto.transport is None:
            raise TransportError("connection closed")
        self.proto.transport.write(data)

    def close(self) -> None:
        if self.proto.transport is not None:
            self.proto.transport.close()

    @property
    def is_open(self) -> bool:
        return self.proto.transport is not None


class _SerialByteSink:
    """A pyserial port driven by the event loop's reader callback (no threads)."""

    def __init__(self, port: object, client: RtuClient) -> None:
        self.port = port
        self.client = client
        self.fd: int = port.fileno()  # type: ignore[attr-defined]
        asyncio.get_running_loop().add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            waiting = self.port.in_waiting  # type: ignore[attr-defined]
            data: bytes = self.port.read(waiting or 1)  # type: ignore[attr-defined]
        except (OSError, ValueError) as exc:  # SerialException is an OSError
            self.close()
            self.client.lost(exc)
            return
        if data:
            self.client.feed(data)

    def write(self, data: bytes) -> None:
        try:
            self.port.write(data)  # type: ignore[attr-defined]
        except (OSError, ValueError) as exc:
            self.close()
            raise TransportError(f"serial write failed: {exc}") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.fd)
        with contextlib.suppress(Exception):
            self.port.close()  # type: ignore[attr-defined]

    @property
    def is_open(self) -> bool:
        return bool(self.port.is_open)  # type: ignore[attr-defined]


class RtuClient:
    """Modbus RTU over a serial port or a TCP stream: one request at a time."""

    def __init__(self, *, inter_frame_delay_s: float, description: str) -> None:
        self.inter_frame_delay_s = inter_frame_delay_s
        self.description = description
        self._sink: _ByteSink | None = None
        self._buf = bytearray()
        self._arrived = asyncio.Event()
        self._lock = asyncio.Lock()
        self._quiet_since = 0.0
        self._lost: Exception | None = None

    @classmethod
    async def open_tcp(
        cls, host: str, port: int, *, timeout_s: float, inter_frame_delay_s: float
    ) -> RtuClient:
        client = cls(inter_frame_delay_s=inter_frame_delay_s, description=f"{host}:{port}")
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            _, proto = await loop.create_connection(lambda: _StreamProtocol(client), host, port)
        client._sink = _TcpByteSink(proto)
        return client

    @classmethod
    async def open_serial(cls, link: SerialLink) -> RtuClient:
        import serial  # pyserial

        ifd = link.inter_frame_delay_s
        if ifd is None:
            ifd = rtu_inter_frame_delay_s(link.baudrate)
        client = cls(inter_frame_delay_s=ifd, description=link.port)

        def _open() -> object:
            return serial.serial_for_url(
                link.port,
                baudrate=link.baudrate,
                parity=str(link.parity),
                stopbits=link.stopbits,
                bytesize=link.bytesize,
                timeout=0,
                write_timeout=0,
                exclusive=True,
            )

        try:
            port = await asyncio.to_thread(_open)
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot open {link.port}: {exc}") from None
        client._sink = _SerialByteSink(port, client)
        return client

    # called by the byte source
    def feed(self, data: bytes) -> None:
        self._buf += data
        self._quiet_since = time.monotonic()
        self._arrived.set()

    def lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionResetError("closed by peer")
        self._arrived.set()

    @property
    def connected(self) -> bool:
        return self._sink is not None and self._sink.is_open and self._lost is None

    async def read(
        self,
        unit_id: int,
        function: int,
        address: int,
        count: int,
        *,
        timeout_s: float,
        device: str | None = None,
    ) -> bytes:
        pdu = read_request_pdu(function, address, count)
        async with self._lock:
            if not self.connected or self._sink is None:
                raise TransportError(f"{self.description} is not open", device=device)
            # silence on the line before the next frame (t3.5), counted from the last byte
            wait = self._quiet_since + self.inter_frame_delay_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._buf.clear()  # drop late answers to earlier, timed-out requests
            self._arrived.clear()
            self._sink.write(rtu_frame(unit_id, pdu))
            try:
                frame = await self._await_frame(timeout_s)
            except TimeoutError:
                raise DeviceTimeoutError(
                    f"no answer from unit {unit_id} within {timeout_s:g} s", device=device
                ) from None
            finally:
                self._quiet_since = time.monotonic()
        resp = parse_rtu_response(frame, unit_id=unit_id)
        return parse_read_response(
            resp, function=function, count=count, unit_id=unit_id, device=device
        )

    async def _await_frame(self, timeout_s: float) -> bytes:
        async with asyncio.timeout(timeout_s):
            while True:
                if self._lost is not None:
                    raise TransportError(f"{self.description}: {self._lost}")
                need = rtu_response_length(self._buf)
                if need is not None and len(self._buf) >= need:
                    frame = bytes(self._buf[:need])
                    del self._buf[:need]
                    return frame
                self._arrived.clear()
                await self._arrived.wait()

    async def close(self) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.close()


# --- link (re)connection -------------------------------------------------------------------

C = TypeVar("C", TcpClient, RtuClient)


def backoff_s(attempt: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Capped exponential delay with "equal jitter": in [d/2, d], d = min(cap, base*2^n)."""
    d = min(cap_s, base_s * float(2 ** min(attempt, 30)))
    return d / 2 + rng.random() * d / 2


class _Endpoint(Generic[C]):
    """Keeps one client open; reopens after loss with capped jittered backoff."""

    def __init__(
        self,
        opener: Callable[[], Awaitable[C]],
        *,
        status: BusStatus,
        description: str,
        cap_s: float = 30.0,
    ) -> None:
        self._opener: Callable[[], Awaitable[C]] = opener
        self._status = status
        self._description = description
        self._cap_s = cap_s
        self._client: C | None = None
        self._failures = 0
        self._next_attempt = 0.0
        self._lock = asyncio.Lock()
        self._rng = random.Random()  # noqa: S311 - jitter, not security
        self._was_connected = False

    async def get(self, *, device: str) -> C:
        client = self._client
        if client is not None and client.connected:
            return client
        async with self._lock:
            client = self._client
            if client is not None and client.connected:
                return client
            if client is not None:
                await client.close()
                self._client = None
                self._lost()
            now = time.monotonic()
            if now < self._next_attempt:
                raise TransportError(
                    f"{self._description} is down; next attempt in "
                    f"{self._next_attempt - now:.1f} s",
                    device=device,
                )
            try:
                client = await self._opener()
            except (OSError, TimeoutError, TransportError) as exc:
                self._failures += 1
                delay = backoff_s(self._failures - 1, base_s=0.5, cap_s=self._cap_s, rng=self._rng)
                self._next_attempt = time.monotonic() + delay
                msg = str(exc) or type(exc).__name__
                self._status.last_error = msg
                if self._failures == 1:
                    log.warning("%s: cannot connect: %s (retrying with backoff)",
                                self._description, msg)
                raise TransportError(f"{self._description}: {msg}", device=device) from None
            if self._failures:
                log.info("%s: connected again after %d failed attempt(s)",
                         self._description, self._failures)
            self._failures = 0
            self._client = client
            self._status.connected = True
            self._status.connects += 1
            self._was_connected = True
            return client

    def _lost(self) -> None:
        if self._was_connected:
            self._was_connected = False
            self._status.connected = False
            self._status.disconnects += 1
            log.warning("%s: connection lost; reconnecting", self._description)

    async def reset(self, client: C) -> None:
        """Close `client` (after a lost, garbled or half-open link) unless already replaced."""
        async with self._lock:
            if self._client is client:
                await client.close()
                self._client = None
                self._lost()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        self._status.connected = False


# --- one device -----------------------------------------------------------------------------


def next_aligned_s(now_s: float, interval_s: float, phase_s: float = 0.0) -> float:
    """The first ``k * interval_s + phase_s`` (in epoch seconds) strictly after `now_s`."""
    return (math.floor((now_s - phase_s) / interval_s) + 1) * interval_s + phase_s


class DevicePoller:
    """Reads one device: plan, requests with retries, decode, status and logging."""

    def __init__(
        self,
        device: PolledDevice,
        *,
        status: DeviceStatus,
        default_timeout_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self.device = device
        self.status = status
        self.timeout_s = device.timeout_s or default_timeout_s
        self.blocks: tuple[ReadBlock, ...] = plan_reads(
            device.profile.fields,
            max_block_registers=device.max_block_registers,
            max_gap_registers=device.max_gap_registers,
        )
        self.seq = device.first_seq if device.first_seq is not None else time.time_ns() // 10**6
        self.phase_s = device.poll_phase_s
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._backoffs = 0
        self._sink_failed = False
        self._nonfinite_logged = False
        self._refused: set[int] = set()
        # per block index: (name, decoder, byte offset); blocks are looked up by
        # index because hashing a block hashes every field spec in it
        self._decoders = [
            tuple(
                (f.name, compile_decoder(f), off)
                for f, off in zip(b.fields, b.offsets, strict=True)
            )
            for b in self.blocks
        ]
        self._polls_since_probe = 0

    async def _read_block(self, client: RegisterReader, block: ReadBlock) -> bytes:
        dev = self.device
        attempt = 0
        while True:
            try:
                return await client.read(
                    dev.unit_id, block.function, block.address, block.count,
                    timeout_s=self.timeout_s, device=dev.id,
                )
            except DeviceTimeoutError:
                self.status.timeouts += 1
                if attempt >= dev.retries:
                    raise
            except ModbusExceptionError as exc:
                if exc.exception_code != EXC_BUSY or attempt >= dev.retries:
                    raise
                await asyncio.sleep(_BUSY_DELAY_S)
            attempt += 1
            self.status.retries += 1

    async def poll(self, client: RegisterReader) -> Reading:
        """One poll of every block. Never raises a `DriverError`: failures become qualities."""
        dev = self.device
        fields: dict[str, float] = {}
        quality: str = Quality.OK
        error: DriverError | None = None
        refusal: ModbusExceptionError | None = None
        refused_now: set[int] = set()
        self._polls_since_probe += 1
        reprobe = self._polls_since_probe >= _REPROBE_REFUSED_POLLS
        if reprobe:
            self._polls_since_probe = 0
        for index, block in enumerate(self.blocks):
            if index in self._refused and not reprobe:
                continue
            try:
                buf = await self._read_block(client, block)
                self._decode_block(index, buf, fields)
            except DeviceTimeoutError as exc:
                quality, error = Quality.TIMEOUT, exc
                break  # a silent device will not answer the next block either
            except ModbusExceptionError as exc:
                if exc.exception_code in _REFUSED:
                    refused_now.add(index)
                    refusal = exc
                    continue
                quality, error = exception_quality(exc.exception_code), exc
                break
            except TransportError as exc:  # includes FrameError
                quality, error = Quality.DISCONNECTED, exc
                break
            except DecodeError as exc:
                quality, error = Quality.DECODE_ERROR, exc
                break
        if error is None and refusal is not None:
            if fields:
                # The device refuses some blocks (exception 01/02: its map is smaller
                # than the profile's) but answers others: keep reading what it has,
                # and probe the refused blocks again now and then.
                new = refused_now - self._refused
                if new:
                    names = ", ".join(f.name for i in sorted(new) for f in self.blocks[i].fields)
                    log.warning("%s: device refuses %s (%s); reading the other fields",
                                dev.id, names, refusal)
                self._refused = refused_now if reprobe else self._refused | refused_now
            else:
                quality, error = exception_quality(refusal.exception_code), refusal
        elif error is None and reprobe:
            self._refused = set()
        if error is not None:
            fields = {}  # a bad poll never carries values, even partial ones
        reading = Reading(
            device_id=dev.id, kind=dev.profile.kind, ts_ns=time.time_ns(), seq=self.seq,
            fields=fields, quality=quality,
        )
        self.seq += 1
        self._account(reading, error)
        return reading

    def _decode_block(self, index: int, buf: bytes, fields: dict[str, float]) -> None:
        isfinite = math.isfinite
        try:
            for name, decoder, off in self._decoders[index]:
                value = decoder(buf, off)
                if isfinite(value):
                    fields[name] = value
                elif not self._nonfinite_logged:
                    self._nonfinite_logged = True
                    log.warning("%s: field %s is %r; left out of readings",
                                self.device.id, name, value)
        except struct.error as exc:
            raise DecodeError(str(exc), device=self.device.id) from None

    def _account(self, reading: Reading, error: DriverError | None) -> None:
        st = self.status
        st.polls += 1
        st.last_poll_ns = reading.ts_ns
        st.last_quality = reading.quality
        if error is None:
            if st.state in (DeviceState.DOWN, DeviceState.BACKOFF):
                log.info("%s: recovered after %d failed poll(s)",
                         self.device.id, st.consecutive_failures)
            st.state = DeviceState.UP
            st.consecutive_failures = 0
            st.last_ok_ns = reading.ts_ns
            st.last_error = None
            self._backoffs = 0
            return
        st.errors += 1
        st.consecutive_failures += 1
        st.last_error = str(error)
        if st.consecutive_failures == self.device.down_after:
            log.warning("%s: down after %d failed poll(s): %s",
                        self.device.id, st.consecutive_failures, error)
            st.state = DeviceState.DOWN

    def next_due_s(self, now_s: float) -> float:
        """Next aligned poll time; after `down_after` failures, a jittered backoff first."""
        interval, phase = self.device.poll_interval_s, self.phase_s
        if self.status.consecutive_failures < self.device.down_after:
            due = next_aligned_s(now_s, interval, phase)
        else:
            delay = backoff_s(
                self._backoffs, base_s=interval,
                cap_s=max(interval, self.device.backoff_cap_s), rng=self._rng,
            )
            self._backoffs += 1
            self.status.state = DeviceState.BACKOFF
            after_s = now_s + delay - interval if delay > interval else now_s
            due = next_aligned_s(after_s, interval, phase)
        self.status.next_poll_ns = int(due * 1e9)
        return due

    def emit(self, sink: Sink, reading: Reading) -> None:
        try:
            sink(reading)
        except Exception:
            if not self._sink_failed:
                self._sink_failed = True
                log.exception("%s: the reading sink raised; readings are being lost",
                              self.device.id)


_clock_offsets: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[float, float]] = (
    weakref.WeakKeyDictionary()
)


def _loop_deadline(loop: asyncio.AbstractEventLoop, wall_s: float) -> float:
    """`wall_s` on the loop's clock, via one wall-minus-loop offset per loop.

    Sharing the offset gives pollers due at the same wall time the very same
    timer deadline, so they wake in one loop iteration and their requests
    share writes and wake-ups. It is refreshed every second, so a stepped
    wall clock is followed within a second.
    """
    now = loop.time()
    cached = _clock_offsets.get(loop)
    if cached is None or now - cached[1] > 1.0:
        cached = (time.time() - now, now)
        _clock_offsets[loop] = cached
    return wall_s - cached[0]


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _sleep_until(wall_s: float) -> None:
    loop = asyncio.get_running_loop()
    when = _loop_deadline(loop, wall_s)
    if when <= loop.time():
        return
    fut: asyncio.Future[None] = loop.create_future()
    handle = loop.call_at(when, _wake, fut)
    try:
        await fut
    finally:
        handle.cancel()


# --- buses ----------------------------------------------------------------------------------


async def poll_tcp_bus(
    link: TcpLink, devices: Sequence[PolledDevice], sink: Sink, *, status: BusStatus
) -> None:
    """Poll every device of a Modbus TCP endpoint in parallel until cancelled."""

    async def _open() -> TcpClient:
        client = TcpClient(link.host, link.port, max_in_flight=link.max_in_flight)
        await client.connect(timeout_s=link.timeout_s)
        return client

    endpoints: list[_Endpoint[TcpClient]] = [
        _Endpoint(_open, status=status, description=link.describe())
        for _ in range(max(1, min(link.max_connections, len(devices))))
    ]

    async def _run(poller: DevicePoller, endpoint: _Endpoint[TcpClient]) -> None:
        due = next_aligned_s(time.time(), poller.device.poll_interval_s, poller.phase_s)
        while True:
            poller.status.next_poll_ns = int(due * 1e9)
            await _sleep_until(due)
            poller.status.last_start_lag_s = time.time() - due
            try:
                client = await endpoint.get(device=poller.device.id)
            except TransportError as exc:
                reading = _failed(poller, exc)
            else:
                reading = await poller.poll(client)
                if reading.quality == Quality.DISCONNECTED and not client.connected:
                    await endpoint.reset(client)
                elif (
                    reading.quality == Quality.TIMEOUT
                    and client.silent_for_s() > link.reconnect_when_silent_s
                ):
                    # nothing at all has come back on this connection for a while:
                    # it may be half-open (cable cut, peer rebooted); open a new one
                    await endpoint.reset(client)
            poller.emit(sink, reading)
            due = poller.next_due_s(time.time())

    pollers = [_poller(d, status, link.timeout_s) for d in devices]
    try:
        async with asyncio.TaskGroup() as tg:
            for i, p in enumerate(pollers):
                endpoint = endpoints[i % len(endpoints)]
                tg.create_task(_run(p, endpoint), name=f"modbus-poll:{p.device.id}")
    finally:
        for endpoint in endpoints:
            await endpoint.close()


async def poll_sequential_bus(
    link: SerialLink | RtuOverTcpLink,
    devices: Sequence[PolledDevice],
    sink: Sink,
    *,
    status: BusStatus,
) -> None:
    """Poll the devices of one RTU line strictly one request at a time until cancelled."""

    async def _open() -> RtuClient:
        if isinstance(link, SerialLink):
            return await RtuClient.open_serial(link)
        return await RtuClient.open_tcp(
            link.host, link.port, timeout_s=link.timeout_s,
            inter_frame_delay_s=link.inter_frame_delay_s,
        )

    endpoint: _Endpoint[RtuClient] = _Endpoint(
        _open, status=status, description=link.describe()
    )
    pollers = [_poller(d, status, link.timeout_s) for d in devices]
    now = time.time()
    # (due, index): due first, then configuration order for ties
    heap = [
        (next_aligned_s(now, p.device.poll_interval_s, p.phase_s), i)
        for i, p in enumerate(pollers)
    ]
    heapq.heapify(heap)
    try:
        while heap:
            due, i = heapq.heappop(heap)
            poller = pollers[i]
            await _sleep_until(due)
            poller.status.last_start_lag_s = time.time() - due
            try:
                client = await endpoint.get(device=poller.device.id)
            except TransportError as exc:
                reading = _failed(poller, exc)
            else:
                reading = await poller.poll(client)
                if reading.quality == Quality.DISCONNECTED and not client.connected:
                    await endpoint.reset(client)
            poller.emit(sink, reading)
            heapq.heappush(heap, (poller.next_due_s(time.time()), i))
    finally:
        await endpoint.close()


def _poller(device: PolledDevice, status: BusStatus, timeout_s: float) -> DevicePoller:
    return DevicePoller(device, status=status.device(device.id), default_timeout_s=timeout_s)


def _failed(poller: DevicePoller, exc: DriverError) -> Reading:
    reading = Reading(
        device_id=poller.device.id, kind=poller.device.profile.kind, ts_ns=time.time_ns(),
        seq=poller.seq, quality=Quality.DISCONNECTED,
    )
    poller.seq += 1
    poller._account(reading, exc)
    return reading
