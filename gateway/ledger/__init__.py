"""The tamper-evident evidence ledger (RFC 6962 Merkle tree over canonical JSON entries).

Public API::

    Ledger.open(path, *, signing_key=None, must_exist=False) -> Ledger
    ledger.size -> int;  ledger.root(size=None) -> bytes;  ledger.head() -> TreeHead
    ledger.append(record: Mapping[str, Any]) -> int          # own transaction
    ledger.entry(index) -> LedgerEntry;  ledger.entries(start=0, stop=None)
    ledger.inclusion_proof(index, size=None) -> list[bytes]
    ledger.consistency_proof(old_size, new_size=None) -> list[bytes]
    ledger.checkpoint() -> TreeHead                           # stores a (signed) head
    ledger.checkpoint_if_grown() -> TreeHead | None
    await ledger.run_checkpoints(*, interval_s=3600.0)        # forever; a named task
    ledger.verify(*, trusted: TreeHead | None = None) -> VerifyReport
    load_signing_key(hex) -> Ed25519PrivateKey

and the pure functions in `gateway.ledger.merkle` (`leaf_hash`, `verify_inclusion`,
`verify_consistency`, ...). `AlertStore` owns a `Ledger` on its own
connection (``store.ledger``): every alert change appends its entry in the
same transaction. See `gateway.ledger.store` for the failure modes.
"""

from gateway.ledger.merkle import (
    EMPTY_ROOT,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from gateway.ledger.store import (
    Ledger,
    LedgerEntry,
    LedgerError,
    TreeHead,
    VerifyReport,
    canonical_json,
    head_message,
    load_signing_key,
)

__all__ = [
    "EMPTY_ROOT",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "TreeHead",
    "VerifyReport",
    "canonical_json",
    "head_message",
    "leaf_hash",
    "load_signing_key",
    "node_hash",
    "verify_consistency",
    "verify_inclusion",
]
