"""Protocol clients, register codec, read planner, device profiles and the `Reading` record.

May import pymodbus, paho-mqtt/aiomqtt, pyserial and pydantic; never `gateway` or `anomaly`.
"""

from drivers.reading import DeviceKind, Quality, Reading

__all__ = ["DeviceKind", "Quality", "Reading"]
