"""Key hashing, constant-time lookup, site scoping and the failure limiter."""

from __future__ import annotations

from gateway.api.auth import FailureLimiter, KeyRing, Permission, Principal, hash_key
from gateway.config import ApiKeySettings, Role


def _key(name: str, role: Role, sites: list[str], secret: str) -> ApiKeySettings:
    return ApiKeySettings(name=name, role=role, sites=sites, sha256=hash_key(secret))


def test_keyring_finds_the_matching_key_and_only_it() -> None:
    ring = KeyRing(
        [
            _key("ann", Role.INSPECTOR, ["north"], "k-ann-0123456789"),
            _key("bob", Role.ADMIN, ["*"], "k-bob-0123456789"),
        ]
    )
    ann = ring.authenticate("k-ann-0123456789")
    assert ann == Principal("ann", Role.INSPECTOR, frozenset({"north"}))
    bob = ring.authenticate("k-bob-0123456789")
    assert bob is not None and bob.name == "bob" and bob.all_sites
    assert ring.authenticate("k-ann-012345678") is None
    assert ring.authenticate("") is None


def test_hash_key_matches_sha256_hex_of_utf8() -> None:
    # sha256("abc") from FIPS 180-2, appendix B.1
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_scoping_and_permissions() -> None:
    north = Principal("i", Role.INSPECTOR, frozenset({"north"}))
    assert north.sees("north") and not north.sees("south")
    assert north.can(Permission.ALERTS_ACT) and not north.can(Permission.EVIDENCE_READ)
    enf = Principal("e", Role.ENFORCEMENT, frozenset({"*"}))
    assert enf.all_sites and enf.sees("anywhere")
    assert enf.can(Permission.EVIDENCE_READ) and not enf.can(Permission.ALERTS_ACT)
    admin = Principal("a", Role.ADMIN, frozenset({"*"}))
    assert all(admin.can(p) for p in Permission)


def test_limiter_blocks_after_limit_and_recovers_after_a_minute() -> None:
    now = [1000.0]
    limiter = FailureLimiter(per_minute=3, clock=lambda: now[0])
    for _ in range(2):
        limiter.record_failure("10.0.0.1")
    assert limiter.retry_after_s("10.0.0.1") is None
    now[0] += 10
    limiter.record_failure("10.0.0.1")
    # blocked until the first failure (t=1000) is 60 s old
    assert limiter.retry_after_s("10.0.0.1") == 50
    assert limiter.retry_after_s("10.0.0.2") is None
    now[0] = 1060.5
    assert limiter.retry_after_s("10.0.0.1") is None


def test_limiter_memory_is_bounded() -> None:
    limiter = FailureLimiter(per_minute=1, max_clients=100, clock=lambda: 0.0)
    for i in range(1000):
        limiter.record_failure(f"ip{i}")
    assert limiter.retry_after_s("ip999") is not None
    assert limiter.retry_after_s("ip0") is None  # forgotten, oldest first
