"""Driver exceptions. Each carries the context an operator needs to act.

`DriverError` is the root; the gateway catches it per device so that one
device's failure never stops another's polling.
"""

from __future__ import annotations


class DriverError(Exception):
    """A device could not be read. Carries the device id when known."""

    def __init__(self, message: str, *, device: str | None = None) -> None:
        self.device = device
        super().__init__(f"{device}: {message}" if device else message)


class ProfileError(DriverError):
    """A profile file is invalid; the message names the file and field."""


class DecodeError(DriverError):
    """Registers or a payload could not be decoded into canonical fields."""


class TransportError(DriverError):
    """The link to a device or bus failed (connect, timeout, closed)."""


class DeviceTimeoutError(TransportError):
    """A request got no answer within its timeout."""


class ModbusExceptionError(DriverError):
    """The device answered with a Modbus exception response."""

    def __init__(
        self,
        *,
        device: str | None,
        unit_id: int,
        function_code: int,
        exception_code: int,
    ) -> None:
        self.unit_id = unit_id
        self.function_code = function_code
        self.exception_code = exception_code
        super().__init__(
            f"unit {unit_id} function 0x{function_code:02X} "
            f"returned exception {exception_code:02d}",
            device=device,
        )
