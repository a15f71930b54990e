"""The time-series schema meterwatch writes, and the reading <-> point mapping.

Schema (the same in InfluxDB and in the embedded store):

- measurement: the device kind (``electricity``, ``water``, ``gas``,
  ``dispenser_nozzle``, ``tank_gauge``); one measurement per kind;
- tags: ``site`` (site id), ``device`` (device id), ``kind`` (device kind, so
  a cross-measurement query can still tell kinds apart) and ``profile`` (the
  device profile; omitted when unknown);
- fields: the canonical fields of the reading (floats, names from
  `drivers.fields`), ``quality`` (string) and ``seq`` (integer);
- timestamp: the reading's ``ts_ns`` with its sub-microsecond digits replaced
  by ``seq % 1000`` (see `point_ts_ns`).

Why the timestamp carries the sequence number: InfluxDB identifies a point by
measurement, tag set and timestamp, so writing the same reading twice (a
retry after a lost acknowledgement, a replay after a crash) overwrites it,
as wanted, but two *different* readings of one device that carry the same
nanosecond timestamp (a coarse device clock, an MQTT device publishing twice
in one tick) would silently overwrite each other. Deriving the last three
digits from ``seq`` keeps rewrites idempotent (the timestamp is a pure
function of the reading) and makes readings of one device distinct unless
they fall in the same microsecond *and* their sequence numbers differ by a
multiple of 1000. The cost is that stored timestamps have microsecond
resolution, far below any meter's timing accuracy. A ``seq`` tag would have
done it too, but at one new series per reading.

Non-finite values (NaN means "missing" by convention; +-inf cannot be
written) are left out of the point; a reading with no usable fields is still
written, with its quality and seq, so outages are visible in the history.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from drivers.reading import DeviceKind, Reading
from gateway.storage.errors import LineProtocolError
from gateway.storage.lineprotocol import Point, escape_key, escape_measurement, format_value

TAG_SITE = "site"
TAG_DEVICE = "device"
TAG_KIND = "kind"
TAG_PROFILE = "profile"
TAG_KEYS = frozenset({TAG_SITE, TAG_DEVICE, TAG_KIND, TAG_PROFILE})
FIELD_QUALITY = "quality"
FIELD_SEQ = "seq"
RESERVED_FIELDS = TAG_KEYS | {FIELD_QUALITY, FIELD_SEQ, "time"}
MEASUREMENTS: tuple[str, ...] = tuple(k.value for k in DeviceKind)


def point_ts_ns(ts_ns: int, seq: int) -> int:
    """The stored timestamp of a reading: µs resolution, ``seq % 1000`` as the ns digits."""
    return ts_ns - ts_ns % 1000 + seq % 1000


class ReadingEncoder:
    """Turns readings into lines of the schema above; caches escaped names.

    `profiles` maps device id to profile name for the ``profile`` tag.
    """

    def __init__(self, *, site_id: str, profiles: Mapping[str, str] | None = None) -> None:
        self.site_id = site_id
        self._profiles = dict(profiles or {})
        self._prefix: dict[tuple[str, DeviceKind], str] = {}
        self._keys: dict[str, str] = {}
        self._quality: dict[str, str] = {}
        self._templates: dict[tuple[str, ...], str] = {}

    def set_profile(self, device_id: str, profile: str) -> None:
        """Record (or change) a device's profile for the tag of later readings."""
        self._profiles[device_id] = profile
        # The outbox encodes in its own thread: copy the keys (one C-level step) and pop.
        for key in [k for k in list(self._prefix) if k[0] == device_id]:
            self._prefix.pop(key, None)

    def _make_prefix(self, device_id: str, kind: DeviceKind) -> str:
        kind_value = DeviceKind(kind).value  # a plain string is accepted if it names a kind
        tags = {TAG_SITE: self.site_id, TAG_DEVICE: device_id, TAG_KIND: kind_value}
        profile = self._profiles.get(device_id)
        if profile:
            tags[TAG_PROFILE] = profile
        head = escape_measurement(kind_value) + "".join(
            f",{k}={escape_key(v, what='tag value')}" for k, v in sorted(tags.items())
        )
        self._prefix[(device_id, kind)] = head
        return head

    def _make_key(self, name: str) -> str:
        if name in RESERVED_FIELDS:
            raise LineProtocolError("is reserved by the schema", what="field key", text=name)
        key = escape_key(name, what="field key")
        self._keys[name] = key
        return key

    def _make_template(self, names: tuple[str, ...]) -> str:
        keys = []
        for name in names:
            key = self._keys.get(name)
            keys.append(key if key is not None else self._make_key(name))
        template = "".join(f"{k.replace('%', '%%')}=%s," for k in keys)
        self._templates[names] = template
        return template

    def line(self, reading: Reading) -> str:
        """One line for `reading`. Raises `LineProtocolError` naming the bad part."""
        prefix = self._prefix.get((reading.device_id, reading.kind))
        if prefix is None:
            prefix = self._make_prefix(reading.device_id, reading.kind)
        fields = reading.fields
        values = tuple(fields.values())
        # Fast path (the usual case): one C-level format of plain finite floats, with a
        # template cached per field-name tuple. Anything else takes the careful path.
        if _all_float(values) and math.isfinite(math.fsum(values)):
            names = tuple(fields)
            template = self._templates.get(names)
            if template is None:
                template = self._make_template(names)
            body = template % values
        else:
            body = self._careful_fields(fields)
        quality = self._quality.get(reading.quality)
        if quality is None:
            quality = self._quality[reading.quality] = format_value(str(reading.quality))
        seq = int(reading.seq)
        ts = point_ts_ns(int(reading.ts_ns), seq)
        return f"{prefix} {body}quality={quality},seq={seq}i {ts}"

    def _careful_fields(self, fields: Mapping[str, float]) -> str:
        parts = []
        for name, value in fields.items():
            key = self._keys.get(name)
            if key is None:
                key = self._make_key(name)
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise LineProtocolError(
                    f"not a number ({type(value).__name__})", what="field value", text=name
                ) from None
            if math.isfinite(v):
                parts.append(f"{key}={v!r},")
        return "".join(parts)


def _all_float(values: tuple[object, ...]) -> bool:
    return not values or set(map(type, values)) == {float}


def reading_from_point(point: Point) -> Reading | None:
    """The reading a point of this schema stands for; None for other points."""
    try:
        kind = DeviceKind(point.measurement)
    except ValueError:
        return None
    device = point.tags.get(TAG_DEVICE)
    seq = point.fields.get(FIELD_SEQ)
    if device is None or point.ts_ns is None or not isinstance(seq, int):
        return None
    quality = point.fields.get(FIELD_QUALITY, "ok")
    values = {
        k: float(v)
        for k, v in point.fields.items()
        if k not in RESERVED_FIELDS and isinstance(v, int | float) and not isinstance(v, bool)
    }
    return Reading(device, kind, point.ts_ns, seq, values, str(quality))
