"""Read planning: coalesce a device's register fields into the fewest read requests.

Pure. Fields are grouped by function code (holding/input registers cannot
share a request) and, in address order, merged greedily into blocks while
the block stays within `max_block_registers` (the Modbus limit is 125) and
the hole between a field and the block so far is at most
`max_gap_registers` (reading unused registers is cheap, but some devices
refuse reads that cross unmapped addresses, so the gap is capped per
device). Greedy left-to-right extension is optimal for this one-dimensional
problem: no plan can cover more of the sorted fields with its first block.
Fields that share registers (bit fields of one status word) share a block.

Failure mode handled: a field wider than the device's block cap cannot be
read at all; `plan_reads` raises `ProfileError` naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from drivers.errors import ProfileError
from drivers.profiles import ModbusField

MODBUS_MAX_READ_REGISTERS = 125


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: `count` registers from `address` with function `function`.

    `fields[i]` starts at byte `offsets[i]` of the response's register bytes.
    """

    function: int
    address: int
    count: int
    fields: tuple[ModbusField, ...]
    offsets: tuple[int, ...]

    @property
    def end(self) -> int:
        return self.address + self.count

    def describe(self) -> str:
        """Human form for logs: ``fc04 0x0000+20 (voltage_l1_v..power_l3_w)``."""
        names = self.fields[0].name
        if len(self.fields) > 1:
            names += f"..{self.fields[-1].name}"
        return f"fc{self.function:02d} 0x{self.address:04X}+{self.count} ({names})"


def _block(function: int, fields: list[ModbusField]) -> ReadBlock:
    start = min(f.address for f in fields)
    end = max(f.end for f in fields)
    return ReadBlock(
        function=function,
        address=start,
        count=end - start,
        fields=tuple(fields),
        offsets=tuple(2 * (f.address - start) for f in fields),
    )


def plan_reads(
    fields: Sequence[ModbusField],
    *,
    max_block_registers: int = MODBUS_MAX_READ_REGISTERS,
    max_gap_registers: int = 16,
) -> tuple[ReadBlock, ...]:
    """The fewest blocks that read every field within the caps, in (function, address) order."""
    if not 1 <= max_block_registers <= MODBUS_MAX_READ_REGISTERS:
        raise ValueError(f"max_block_registers must be 1..125, got {max_block_registers}")
    if max_gap_registers < 0:
        raise ValueError(f"max_gap_registers must be >= 0, got {max_gap_registers}")
    blocks: list[ReadBlock] = []
    ordered = sorted(fields, key=lambda f: (f.function, f.address, f.end))
    current: list[ModbusField] = []
    start = end = function = 0
    for f in ordered:
        if f.register_count > max_block_registers:
            raise ProfileError(
                f"field {f.name} takes {f.register_count} registers, more than the "
                f"device's max_block_registers {max_block_registers}"
            )
        fits = (
            current
            and f.function == function
            and f.address - end <= max_gap_registers
            and max(end, f.end) - start <= max_block_registers
        )
        if fits:
            current.append(f)
            end = max(end, f.end)
            continue
        if current:
            blocks.append(_block(function, current))
        current, start, end, function = [f], f.address, f.end, f.function
    if current:
        blocks.append(_block(function, current))
    return tuple(blocks)
