"""Read planner: fewest requests within the block and gap caps."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.codec import DataType
from drivers.errors import ProfileError
from drivers.planner import plan_reads
from drivers.profiles import ModbusField, load_profile

TYPES = [DataType.U16, DataType.U32, DataType.F32, DataType.U64]


def _f(name: str, address: int, dt: DataType = DataType.U16, function: int = 3) -> ModbusField:
    return ModbusField(name=name, function=function, address=address, data_type=dt)  # type: ignore[arg-type]


def test_sdm630_plan_follows_the_gap_cap() -> None:
    fields = load_profile("eastron_sdm630").fields
    # phase values, then total power .. export kWh (0x12..0x34 is a 34-register hole)
    assert [(b.function, b.address, b.count) for b in plan_reads(fields)] == [
        (4, 0x0000, 0x12),
        (4, 0x0034, 0x18),
        (4, 0x00E0, 2),
        (4, 0x0300, 6),
    ]
    wide = plan_reads(fields, max_gap_registers=40)
    assert [(b.address, b.count) for b in wide] == [(0, 0x4C), (0xE0, 2), (0x300, 6)]


def test_gap_cap_splits_and_zero_gap_reads_only_adjacent() -> None:
    fields = [_f("a", 0), _f("b", 1), _f("c", 5)]
    assert len(plan_reads(fields, max_gap_registers=3)) == 1
    blocks = plan_reads(fields, max_gap_registers=2)
    assert [(b.address, b.count) for b in blocks] == [(0, 2), (5, 1)]


def test_block_cap_splits() -> None:
    fields = [_f(f"x{i}", 2 * i, DataType.U32) for i in range(100)]  # 200 registers
    blocks = plan_reads(fields)
    assert [b.count for b in blocks] == [124, 76]
    blocks = plan_reads(fields, max_block_registers=10)
    assert len(blocks) == 20 and all(b.count == 10 for b in blocks)


def test_functions_never_share_a_block() -> None:
    blocks = plan_reads([_f("a", 0, function=3), _f("b", 1, function=4)])
    assert [(b.function, b.address) for b in blocks] == [(3, 0), (4, 1)]


def test_bit_fields_share_their_register() -> None:
    blocks = plan_reads(load_profile("water_meter").fields)
    assert len(blocks) == 1
    block = blocks[0]
    offsets = dict(zip((f.name for f in block.fields), block.offsets, strict=True))
    assert offsets["status_bits"] == offsets["leak_flag"] == 12


def test_field_wider_than_cap_is_refused() -> None:
    with pytest.raises(ProfileError, match="field big takes 4 registers"):
        plan_reads([_f("big", 0, DataType.U64)], max_block_registers=2)


@st.composite
def field_sets(draw: st.DrawFn) -> list[ModbusField]:
    n = draw(st.integers(1, 40))
    return [
        _f(f"f{i}", draw(st.integers(0, 400)), draw(st.sampled_from(TYPES)),
           draw(st.sampled_from([3, 4])))
        for i in range(n)
    ]


@given(field_sets(), st.integers(4, 125), st.integers(0, 20))
def test_plans_cover_every_field_within_caps(
    fields: list[ModbusField], max_block: int, max_gap: int
) -> None:
    blocks = plan_reads(fields, max_block_registers=max_block, max_gap_registers=max_gap)
    seen = [f for b in blocks for f in b.fields]
    assert sorted(id(f) for f in seen) == sorted(id(f) for f in fields)
    for b in blocks:
        assert 1 <= b.count <= max_block
        for f, off in zip(b.fields, b.offsets, strict=True):
            assert f.function == b.function
            assert b.address + off // 2 == f.address and f.end <= b.end
        # no hole inside a block is larger than the gap cap
        covered = sorted((f.address, f.end) for f in b.fields)
        reach = covered[0][1]
        for lo, hi in covered[1:]:
            assert lo - reach <= max_gap
            reach = max(reach, hi)


@given(field_sets())
def test_no_two_neighbouring_blocks_could_merge(fields: list[ModbusField]) -> None:
    blocks = plan_reads(fields, max_block_registers=125, max_gap_registers=8)
    for a, b in itertools.pairwise(blocks):
        if a.function == b.function:
            assert b.address - a.end > 8 or max(a.end, b.end) - a.address > 125
