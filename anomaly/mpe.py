"""Maximum permissible errors (MPE) per device kind and accuracy class.

Figures from OIML R117/R49/R137, MID MI-001..005, IEC 62053 and JJG 443 as
collected in shared/DOMAIN.md, section 1. Values are percent of the reading
in the main (upper) flow or load range. Detector thresholds are fractions of
these numbers and can be overridden per device.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

MPE_PCT: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "dispenser_nozzle": MappingProxyType({"0.5": 0.5, "0.3": 0.3, "jjg443": 0.3, "meter": 0.3}),
        "electricity": MappingProxyType(
            {"A": 3.5, "B": 2.0, "C": 1.0, "2": 2.0, "1": 1.0, "0.5S": 0.5, "0.2S": 0.2}
        ),
        "water": MappingProxyType({"2": 2.0, "1": 1.0}),
        "gas": MappingProxyType({"1.5": 1.5, "1.0": 1.0}),
        "tank_gauge": MappingProxyType({"gauge": 0.5}),
    }
)

DEFAULT_CLASS: Mapping[str, str] = MappingProxyType(
    {
        "dispenser_nozzle": "0.5",
        "electricity": "1",
        "water": "2",
        "gas": "1.5",
        "tank_gauge": "gauge",
    }
)


def mpe_pct(kind: str, accuracy_class: str | None = None) -> float:
    """MPE in percent for `kind` and `accuracy_class` (the kind's default if None).

    Raises KeyError naming the known classes when the class is unknown.
    """
    classes = MPE_PCT[kind]
    cls = accuracy_class if accuracy_class is not None else DEFAULT_CLASS[kind]
    try:
        return classes[cls]
    except KeyError:
        raise KeyError(
            f"unknown accuracy class {cls!r} for {kind} (known: {', '.join(classes)})"
        ) from None
