"""InfluxDB line protocol: pure encode and parse functions, no I/O.

Escaping follows what InfluxDB 1.x (and the 2.x/3.x line-protocol parsers,
which share its rules) actually accept, checked against influxd 1.6.7:

- measurement: ``,`` and space are escaped with a backslash;
- tag keys, tag values and field keys: ``,``, ``=`` and space are escaped;
- string field values are double-quoted; ``"`` and ``\\`` are escaped;
- any other backslash is literal (``a\\b`` is stored as ``a\\b``).

Failure modes handled: text that line protocol cannot carry raises
`LineProtocolError` naming the part and the text, instead of producing a
line that the server would misread or reject. That is: empty names, line
breaks in names or tag values, a name or tag value ending in a backslash or
with a backslash right before a character that needs escaping (the server
would read it as an escape), a measurement starting with ``#`` (a comment),
the reserved key ``time``, non-finite floats and integers outside int64.
Tags with empty values are omitted, as InfluxDB does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from gateway.storage.errors import LineProtocolError

FieldValue = bool | int | float | str

_MEASUREMENT_SPECIALS = ", "
_KEY_SPECIALS = ", ="
_MEASUREMENT_ESC = str.maketrans({",": "\\,", " ": "\\ "})
_KEY_ESC = str.maketrans({",": "\\,", " ": "\\ ", "=": "\\="})
_STRING_ESC = str.maketrans({'"': '\\"', "\\": "\\\\"})
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _check_name(text: str, what: str, specials: str) -> None:
    if not isinstance(text, str):
        raise LineProtocolError("must be a string", what=what, text=repr(text))
    if not text:
        raise LineProtocolError("must not be empty", what=what, text=text)
    if "\n" in text or "\r" in text:
        raise LineProtocolError("must not contain a line break", what=what, text=text)
    if "\\" in text:
        if text.endswith("\\"):
            raise LineProtocolError("must not end with a backslash", what=what, text=text)
        for i, ch in enumerate(text[:-1]):
            if ch == "\\" and text[i + 1] in specials:
                raise LineProtocolError(
                    f"a backslash before {text[i + 1]!r} cannot be written", what=what, text=text
                )


def escape_measurement(name: str) -> str:
    """The measurement name as it appears in a line."""
    _check_name(name, "measurement", _MEASUREMENT_SPECIALS)
    if name.startswith("#"):
        raise LineProtocolError(
            "must not start with '#' (a comment line)", what="measurement", text=name
        )
    return name.translate(_MEASUREMENT_ESC)


def escape_key(text: str, *, what: str = "key") -> str:
    """A tag key, tag value or field key as it appears in a line."""
    _check_name(text, what, _KEY_SPECIALS)
    if what != "tag value" and text == "time":
        raise LineProtocolError("'time' is reserved", what=what, text=text)
    return text.translate(_KEY_ESC)


def format_value(value: FieldValue, *, key: str = "?") -> str:
    """A field value: float as shortest repr, ``123i`` integer, ``true``, quoted string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise LineProtocolError(
                "integer outside int64", what="field value", text=f"{key}={value}"
            )
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LineProtocolError(
                "not a finite number", what="field value", text=f"{key}={value}"
            )
        return repr(value)
    if isinstance(value, str):
        return '"' + value.translate(_STRING_ESC) + '"'
    raise LineProtocolError(
        f"unsupported type {type(value).__name__}", what="field value", text=f"{key}={value!r}"
    )


def encode_point(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, FieldValue],
    ts_ns: int | None = None,
) -> str:
    """One line (without the newline). Tags are sorted by key, as InfluxDB prefers."""
    if not fields:
        raise LineProtocolError("a point needs at least one field", what="point", text=measurement)
    head = escape_measurement(measurement)
    tag_part = "".join(
        f",{escape_key(k, what='tag key')}={escape_key(v, what='tag value')}"
        for k, v in sorted(tags.items())
        if v != ""
    )
    field_part = ",".join(
        f"{escape_key(k, what='field key')}={format_value(v, key=k)}" for k, v in fields.items()
    )
    if ts_ns is None:
        return f"{head}{tag_part} {field_part}"
    return f"{head}{tag_part} {field_part} {int(ts_ns)}"


# --- parsing -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Point:
    """A parsed line."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    ts_ns: int | None


_UNESCAPE_MEASUREMENT = re.compile(r"\\([, ])")
_UNESCAPE_KEY = re.compile(r"\\([, =])")
_UNESCAPE_STRING = re.compile(r'\\(["\\])')


def _scan(line: str, i: int, stops: str) -> int:
    """Index of the first unescaped character of `stops` at or after `i` (or len)."""
    n = len(line)
    while i < n:
        ch = line[i]
        if ch == "\\":
            i += 2
            continue
        if ch in stops:
            return i
        i += 1
    return n


def _bad(text: str, at: int, why: str) -> LineProtocolError:
    line_start = text.rfind("\n", 0, at) + 1
    return LineProtocolError(why, what="line", text=text[line_start : line_start + 200])


def _parse_at(text: str, i: int) -> tuple[Point, int]:
    """Parse the line starting at `i`; returns the point and the index after its end."""
    n = len(text)
    end = _scan(text, i, ", \n")
    if end == i:
        raise _bad(text, i, "no measurement")
    measurement = _UNESCAPE_MEASUREMENT.sub(r"\1", text[i:end])
    tags: dict[str, str] = {}
    i = end
    while i < n and text[i] == ",":
        eq = _scan(text, i + 1, "=, \n")
        if eq >= n or text[eq] != "=":
            raise _bad(text, i, "tag without '='")
        stop = _scan(text, eq + 1, ", \n")
        tags[_UNESCAPE_KEY.sub(r"\1", text[i + 1 : eq])] = _UNESCAPE_KEY.sub(
            r"\1", text[eq + 1 : stop]
        )
        i = stop
    if i >= n or text[i] != " ":
        raise _bad(text, i, "no fields")
    fields: dict[str, FieldValue] = {}
    i += 1
    while True:
        eq = _scan(text, i, "=, \n")
        if eq >= n or text[eq] != "=":
            raise _bad(text, i, "field without '='")
        key = _UNESCAPE_KEY.sub(r"\1", text[i:eq])
        j = eq + 1
        if j < n and text[j] == '"':
            k = j + 1
            while k < n and text[k] != '"':
                k += 2 if text[k] == "\\" else 1
            if k >= n:
                raise _bad(text, i, "unterminated string")
            fields[key] = _UNESCAPE_STRING.sub(r"\1", text[j + 1 : k])
            j = k + 1
        else:
            k = j
            while k < n and text[k] not in ", \n":
                k += 1
            fields[key] = _parse_scalar(text, j, text[j:k])
            j = k
        if j >= n or text[j] != ",":
            break
        i = j + 1
    ts: int | None = None
    eol = text.find("\n", j)
    if eol < 0:
        eol = n
    rest = text[j:eol].strip()
    if rest:
        try:
            ts = int(rest)
        except ValueError:
            raise _bad(text, j, "bad timestamp") from None
    return Point(measurement, tags, fields, ts), eol + 1


def _parse_scalar(text: str, at: int, value: str) -> FieldValue:
    if value in ("t", "T", "true", "True", "TRUE"):
        return True
    if value in ("f", "F", "false", "False", "FALSE"):
        return False
    try:
        if value.endswith(("i", "u")):
            return int(value[:-1])
        return float(value)
    except ValueError:
        raise _bad(text, at, f"bad field value {value!r}") from None


def parse_line(line: str) -> Point:
    """Parse one line written by `encode_point` (or any client following the same rules)."""
    point, end = _parse_at(line, 0)
    if end < len(line) and line[end:].strip():
        raise _bad(line, end, "more than one line")
    return point


def parse_lines(text: str) -> Iterator[Point]:
    """Parse a body of lines; blank lines and ``#`` comments are skipped.

    A newline inside a quoted string field value belongs to the value.
    """
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif ch == "#":
            eol = text.find("\n", i)
            i = n if eol < 0 else eol + 1
        else:
            point, i = _parse_at(text, i)
            yield point
