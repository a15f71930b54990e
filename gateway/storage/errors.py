"""The storage exception hierarchy.

``StorageError`` is the base. ``LineProtocolError`` (also a ``ValueError``) is a
name or value that line protocol cannot carry; ``QueryError`` is a rejected or
malformed history query; ``SinkUnavailable`` means "try again later" (the
server is away, overloaded or refuses our credentials) and ``SinkRejected``
means the server refused this particular payload, so sending it again will not
help. The forwarder retries the first and quarantines the second.
"""

from __future__ import annotations

import gzip
import zlib


class StorageError(Exception):
    """Base of every storage error. `backend` names the store or sink, if known."""

    def __init__(self, message: str, *, backend: str | None = None) -> None:
        self.backend = backend
        super().__init__(f"{backend}: {message}" if backend else message)


class LineProtocolError(StorageError, ValueError):
    """A measurement, tag, field name or value that line protocol cannot carry.

    `what` says which part (``"tag value"``, ``"field key"``, ...) and `text`
    is the offending text.
    """

    def __init__(self, message: str, *, what: str, text: str) -> None:
        self.what = what
        self.text = text
        super().__init__(f"{what} {text!r}: {message}")


class QueryError(StorageError):
    """A history query was invalid or the server answered with an error."""


class SinkUnavailable(StorageError):
    """The sink cannot take writes right now (network, 5xx, auth); retry later.

    `status` is the HTTP status, when there was a response.
    """

    def __init__(self, message: str, *, backend: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message, backend=backend)


class SinkRejected(StorageError):
    """The sink refused this payload for good (HTTP 400: parse error, type conflict)."""

    def __init__(self, message: str, *, backend: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message, backend=backend)


def gunzip_text(body: bytes, *, backend: str) -> str:
    """Decompress an outbox body (concatenated gzip members of UTF-8 lines).

    A corrupt body raises `SinkRejected`, so the forwarder quarantines it
    instead of retrying it forever.
    """
    try:
        return gzip.decompress(body).decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise SinkRejected(f"corrupt outbox body: {exc}", backend=backend) from exc
