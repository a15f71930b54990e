"""API keys, roles, site scoping and the failed-authentication rate limit.

A key is presented as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
The config holds only the SHA-256 hex digest of each key; the presented key is
hashed and compared against every configured digest with
`hmac.compare_digest`, without stopping at the first match, so timing does not
tell how many digests or which one matched. Keys are never logged or echoed.

Failure modes handled: a missing, malformed or unknown credential (401 with
``WWW-Authenticate``), a role that may not use a route (403), an object of a
site the key is not scoped to (404, so that its existence does not leak), and
credential guessing: once a client IP has `auth_failures_per_minute` failures
within the last 60 s, every request from it that needs a credential gets 429
with ``Retry-After`` until the oldest failure is a minute old.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from gateway.config import ApiKeySettings, Role

ALL_SITES = "*"


class Permission(StrEnum):
    """What a route needs. `ROLE_PERMISSIONS` maps each role to its permissions."""

    DEVICES_READ = "devices:read"
    READINGS_READ = "readings:read"
    HISTORY_READ = "history:read"
    ALERTS_READ = "alerts:read"
    ALERTS_ACT = "alerts:act"
    EVIDENCE_READ = "evidence:read"
    LEDGER_VERIFY = "ledger:verify"
    METRICS_READ = "metrics:read"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    # Inspectors work the alert queue and look at devices (with recent readings,
    # see INSPECTOR_READINGS_WINDOW_NS); the long history and evidence are not theirs.
    Role.INSPECTOR: frozenset(
        {
            Permission.DEVICES_READ,
            Permission.READINGS_READ,
            Permission.ALERTS_READ,
            Permission.ALERTS_ACT,
        }
    ),
    # Enforcement officers build cases: history, readings, evidence; they read
    # alerts but do not change them.
    Role.ENFORCEMENT: frozenset(
        {
            Permission.DEVICES_READ,
            Permission.READINGS_READ,
            Permission.HISTORY_READ,
            Permission.ALERTS_READ,
            Permission.EVIDENCE_READ,
            Permission.LEDGER_VERIFY,
        }
    ),
    Role.ADMIN: frozenset(Permission),
}

INSPECTOR_READINGS_WINDOW_NS = 7 * 86_400 * 1_000_000_000
"""How far back an inspector may read a device's readings (the live view, not the history)."""


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of an API key, as stored in ``api.keys[].sha256``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: the key's name, role and sites."""

    name: str
    role: Role
    sites: frozenset[str]

    @property
    def all_sites(self) -> bool:
        return ALL_SITES in self.sites

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    def sees(self, site: str) -> bool:
        """True when objects of `site` are within this key's scope."""
        return self.all_sites or site in self.sites


class KeyRing:
    """The configured keys; authenticates a presented key in constant time."""

    def __init__(self, keys: Sequence[ApiKeySettings]) -> None:
        self._keys = [(bytes.fromhex(k.sha256), k) for k in keys]

    def __len__(self) -> int:
        return len(self._keys)

    def authenticate(self, presented: str) -> Principal | None:
        """The key's principal, or None if no configured key matches."""
        digest = hashlib.sha256(presented.encode("utf-8")).digest()
        found: ApiKeySettings | None = None
        for stored, key in self._keys:
            # No early exit: every digest is compared whatever matched before.
            if hmac.compare_digest(stored, digest):
                found = key
        if found is None:
            return None
        return Principal(name=found.name, role=found.role, sites=frozenset(found.sites))


class FailureLimiter:
    """Counts failed authentications per client IP over a sliding minute.

    Memory is bounded: at most `max_clients` IPs are tracked (least recently
    failing ones are forgotten first).
    """

    WINDOW_S = 60.0

    def __init__(
        self,
        *,
        per_minute: int,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = per_minute
        self._max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after_s(self, client: str) -> int | None:
        """Seconds until `client` may try again, or None if it is not blocked."""
        times = self._prune(client)
        if times is None or len(times) < self._limit:
            return None
        wait = times[0] + self.WINDOW_S - self._clock()
        return max(1, math.ceil(wait))

    def record_failure(self, client: str) -> None:
        times = self._failures.get(client)
        if times is None:
            times = deque()
            self._failures[client] = times
            while len(self._failures) > self._max_clients:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(client)
        times.append(self._clock())
        while len(times) > self._limit:
            times.popleft()

    def _prune(self, client: str) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        horizon = self._clock() - self.WINDOW_S
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times
