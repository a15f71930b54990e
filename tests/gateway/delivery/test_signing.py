"""Webhook signatures: HMAC-SHA256 over "<timestamp>.<body>", checked against openssl."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from gateway.delivery import sign, verify

SECRET = b"0123456789abcdef-webhook"
BODY = b'{"event":"alert.created","id":"s1-0"}'


def test_signature_matches_openssl() -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    out = subprocess.run(
        [openssl, "dgst", "-sha256", "-hmac", SECRET.decode(), "-r"],
        input=b"1700000000." + BODY,
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert sign(SECRET, 1_700_000_000, BODY) == "sha256=" + out.split()[0]


def test_receiver_side_checks() -> None:
    sig = sign(SECRET, 1_700_000_000, BODY)
    ok = {"timestamp": "1700000000", "signature": sig, "body": BODY}
    assert verify(SECRET, **ok, now_s=1_700_000_100)
    assert not verify(SECRET, **ok, now_s=1_700_000_301)  # replayed later
    assert not verify(b"another-secret-123", **ok, now_s=1_700_000_000)
    assert not verify(SECRET, **{**ok, "body": BODY + b" "}, now_s=1_700_000_000)
    # a fresh timestamp does not fit an old signature
    assert not verify(SECRET, **{**ok, "timestamp": "1700000300"}, now_s=1_700_000_300)
    assert not verify(SECRET, **{**ok, "timestamp": "soon"}, now_s=1_700_000_000)
