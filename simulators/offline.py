"""Offline mode: a scenario's labelled reading streams as numpy arrays, without any network.

`generate("over_registration_1pct", seed=1, days=60)` returns what a gateway
polling every device at its sample interval would have stored: per device
the timestamps, the canonical fields (NaN where a poll got no answer) and an
`ok` mask, plus the balance groups and the ground truth. Months of a
dozen-device site take seconds. The same seed and scenario give the same
arrays, and the simulators' servers serve exactly these values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from drivers.errors import ProfileError
from drivers.profiles import load_profile
from simulators.catalogue import get_scenario
from simulators.site import SiteSim
from simulators.spec import (
    DeviceSpec,
    GroundTruth,
    GroupSpec,
    Scenario,
)

__all__ = ["DeviceStream", "GroundTruth", "GroupSpec", "OfflineRun", "generate"]


@dataclass(frozen=True, slots=True)
class DeviceStream:
    """One device's readings: `fields[name][i]` was read at `ts_ns[i]` (NaN = missing)."""

    kind: str
    ts_ns: npt.NDArray[np.int64]
    fields: dict[str, npt.NDArray[np.float64]]
    ok: npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class OfflineRun:
    """A generated run: streams per device, balance groups, ground truth."""

    scenario: Scenario
    seed: int
    days: int
    devices: dict[str, DeviceStream]
    groups: list[GroupSpec]
    truth: list[GroundTruth]

    def meta(self, device_id: str) -> tuple[str, str]:
        """(kind, accuracy_class) of `device_id`."""
        spec = self.spec(device_id)
        return spec.kind.value, spec.accuracy_class

    def spec(self, device_id: str) -> DeviceSpec:
        return self.scenario.device(device_id)


def generate(
    scenario: str | Path | Scenario,
    *,
    seed: int = 0,
    days: int = 30,
    step_s: Mapping[str, float] | None = None,
    start_ns: int | None = None,
    all_fields: bool = False,
) -> OfflineRun:
    """Generate `days` days of `scenario` (catalogue name, bundled file name, path or object).

    `step_s` overrides sample intervals per device kind (``{"electricity": 60}``);
    `start_ns` overrides the run start (default: the scenario's, a fixed Monday).
    Each device keeps only the fields its profile exposes (what a gateway
    would read), unless `all_fields` is true or the profile is unknown.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    scn = with_overrides(get_scenario(scenario), step_s=step_s, start_ns=start_ns)
    sim = SiteSim(scn, seed=seed)
    parts: dict[
        str,
        list[
            tuple[npt.NDArray[np.int64], dict[str, npt.NDArray[np.float64]], npt.NDArray[np.bool_]]
        ],
    ] = {d.id: [] for d in scn.devices}
    for d in range(days):
        for dev_id, chunk in sim.day(d).items():
            parts[dev_id].append((chunk.ts_ns, chunk.fields, chunk.ok))
    devices: dict[str, DeviceStream] = {}
    for spec in scn.devices:
        chunks = parts[spec.id]
        names = list(chunks[0][1])
        if not all_fields:
            exposed = profile_fields(spec)
            if exposed is not None:
                names = [n for n in names if n in exposed]
        devices[spec.id] = DeviceStream(
            kind=spec.kind.value,
            ts_ns=np.concatenate([c[0] for c in chunks]),
            fields={n: np.concatenate([c[1][n] for c in chunks]) for n in names},
            ok=np.concatenate([c[2] for c in chunks]),
        )
    return OfflineRun(
        scenario=scn,
        seed=seed,
        days=days,
        devices=devices,
        groups=list(scn.groups),
        truth=scn.truth(),
    )


def profile_fields(spec: DeviceSpec) -> frozenset[str] | None:
    """Canonical fields the device's profile exposes; None when the profile is unknown."""
    try:
        profile = load_profile(spec.profile, kind=spec.kind)
    except ProfileError:
        return None
    return frozenset(profile.field_names)


def with_overrides(
    scn: Scenario, *, step_s: Mapping[str, float] | None = None, start_ns: int | None = None
) -> Scenario:
    """`scn` with other sample intervals per kind and/or another start."""
    if step_s is None and start_ns is None:
        return scn
    return Scenario(
        name=scn.name,
        description=scn.description,
        devices=scn.devices,
        groups=scn.groups,
        conditions=scn.conditions,
        start_ns=scn.start_ns if start_ns is None else start_ns,
        step_s={**scn.step_s, **(step_s or {})},
    )
