"""MQTT payload decoders: JSON field paths, Tasmota ENERGY, Shelly Gen2 status. Pure.

`decode_payload(spec, payload, template=...)` turns one message into
canonical fields. Paths are parsed once per profile field
(``ENERGY.Power[1]`` style, see `drivers.profiles.parse_path`).

Failure modes handled (all raise `DecodeError` with the reason, so the
subscriber can count the message as malformed): bytes that are not UTF-8
JSON, JSON that is not an object, a Tasmota message without an ``ENERGY``
object, a configured field whose value is not a number, and a message that
carries none of the profile's fields. Fields absent from a message are
simply not in the result (Shelly sends counters and instantaneous values on
different topics). Tasmota ``LWT`` messages give availability instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from drivers.errors import DecodeError
from drivers.profiles import MqttSpec, PayloadDecoder

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Decoded:
    """Fields of one message; `online` is set by availability (LWT) messages only."""

    fields: dict[str, float] = field(default_factory=dict)
    online: bool | None = None


def _walk(obj: Any, parts: tuple[str | int, ...]) -> Any:
    for part in parts:
        if isinstance(part, int):
            if not isinstance(obj, list) or part >= len(obj):
                return _MISSING
            obj = obj[part]
        else:
            if not isinstance(obj, dict) or part not in obj:
                return _MISSING
            obj = obj[part]
    return obj


def _number(value: Any, name: str, path: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value)
        except ValueError:
            raise DecodeError(f"field {name} ({path}) is {value!r}, not a number") from None
    else:
        raise DecodeError(f"field {name} ({path}) is {type(value).__name__}, not a number")
    if not math.isfinite(out):
        raise DecodeError(f"field {name} ({path}) is {out}")
    return out


def decode_payload(spec: MqttSpec, payload: bytes, *, template: str = "") -> Decoded:
    """Decode one message received on a topic made from `template`."""
    if spec.decoder is PayloadDecoder.TASMOTA and template.endswith("/LWT"):
        text = payload.decode("utf-8", errors="replace").strip()
        if text.lower() in ("online", "offline"):
            return Decoded(online=text.lower() == "online")
        raise DecodeError(f"LWT payload {text[:40]!r} is neither Online nor Offline")
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DecodeError(f"JSON {type(doc).__name__}, expected an object")
    root: Any = doc
    if spec.decoder is PayloadDecoder.TASMOTA:
        root = doc.get("ENERGY")
        if not isinstance(root, dict):
            raise DecodeError("Tasmota message without an ENERGY object")
    elif spec.decoder is PayloadDecoder.SHELLY_GEN2 and isinstance(doc.get("params"), dict):
        # NotifyStatus RPC frame: {"method": "NotifyStatus", "params": {"em1:0": {...}}}
        inner = [v for k, v in doc["params"].items() if k.startswith("em") and isinstance(v, dict)]
        if len(inner) == 1:
            root = inner[0]
    fields: dict[str, float] = {}
    for f in spec.fields:
        value = _walk(root, f.path_parts)
        if value is _MISSING or value is None:
            continue
        raw = _number(value, f.name, f.path)
        fields[f.name] = raw if f.scale == 1.0 and f.offset == 0.0 else raw * f.scale + f.offset
    if not fields:
        paths = ", ".join(f.path for f in spec.fields)
        raise DecodeError(f"none of the profile's paths ({paths}) is in the message")
    return Decoded(fields=fields)
