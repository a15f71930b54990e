"""Protocol clients, register codec, read planner, device profiles and the `Reading` record.

May import pymodbus, paho-mqtt/aiomqtt, pyserial and pydantic; never `gateway` or `anomaly`.

Public API (import from the modules; this package imports nothing heavy):

- `drivers.profiles`: `load_profile(name, *, extra_dirs=(), kind=None) -> Profile`,
  `load_profile_file(path, *, kind=None)`, `available_profiles(*, extra_dirs=())`,
  `check_profile_name(name, kind, extra_dirs) -> str | None`.
- `drivers.codec`: `decode(registers, spec) -> float`, `encode(value, spec) -> list[int]`,
  `decode_from(buf, offset, spec)`, `compile_decoder(spec)`, `DataType`, `Order`,
  `RegisterSpec`, `wire_address(address, base=...)`.
- `drivers.planner`: `plan_reads(fields, *, max_block_registers, max_gap_registers)`.
- `drivers.links`: `TcpLink`, `RtuOverTcpLink`, `SerialLink`, `MqttLink`,
  `PolledDevice`, `SubscribedDevice`.
- `drivers.bus`: `async run_bus(link, devices, sink, *, status=None)`.
- `drivers.status`: `BusStatus`, `DeviceStatus`, `DeviceState`.
- `drivers.payloads`: `decode_payload(spec, payload, *, template="")`.
- `drivers.probe`: one-shot reads for `meterwatch read`.
"""

from drivers.reading import DeviceKind, Quality, Reading

__all__ = ["DeviceKind", "Quality", "Reading"]
