"""The bundle verifier's stdlib Ed25519 check agrees with `cryptography` (OpenSSL)."""

from __future__ import annotations

import random

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.evidence.verify_bundle import ed25519_verify

# RFC 8032 section 7.1, TEST 1 (empty message)
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def test_rfc8032_vector() -> None:
    assert ed25519_verify(RFC_PUBLIC, b"", RFC_SIGNATURE)
    assert not ed25519_verify(RFC_PUBLIC, b"x", RFC_SIGNATURE)


def test_agrees_with_cryptography_on_good_and_tampered_signatures() -> None:
    rng = random.Random(7)
    for _ in range(12):
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        message = rng.randbytes(rng.randrange(0, 200))
        signature = key.sign(message)
        assert ed25519_verify(public, message, signature)
        bit = rng.randrange(64 * 8)
        bad = bytearray(signature)
        bad[bit // 8] ^= 1 << (bit % 8)
        assert not ed25519_verify(public, message, bytes(bad))
        assert not ed25519_verify(public, message + b"!", signature)
        other = (
            Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        assert not ed25519_verify(other, message, signature)


def test_malformed_inputs_are_rejected_not_raised() -> None:
    assert not ed25519_verify(b"\x00" * 31, b"", RFC_SIGNATURE)
    assert not ed25519_verify(RFC_PUBLIC, b"", RFC_SIGNATURE[:63])
    # S >= L (a malleated signature) is refused
    s = (
        int.from_bytes(RFC_SIGNATURE[32:], "little")
        + 2**252
        + 27742317777372353535851937790883648493
    )
    assert not ed25519_verify(RFC_PUBLIC, b"", RFC_SIGNATURE[:32] + s.to_bytes(32, "little"))
    # a public key that is not a curve point
    assert not ed25519_verify(b"\xff" * 32, b"", RFC_SIGNATURE)
