"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and proof verification (pure).

leaf hash ``SHA-256(0x00 || entry)``; interior node ``SHA-256(0x01 || left || right)``;
the root of ``n`` leaves splits at the largest power of two below ``n``; the
empty tree's root is ``SHA-256("")``. Proof generation takes a function that
returns the hash of any subtree ``[start, end)`` so that the caller decides
how subtrees are stored; verification follows RFC 9162 sections 2.1.3.2 and
2.1.4.2 step by step and needs nothing but the proof.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()

SubtreeHash = Callable[[int, int], bytes]
"""``subtree(start, end)`` -> MTH(D[start:end]) for ``0 <= start < end``."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH of a list of *leaf hashes* (recursive, for tests and small trees)."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = split_point(n)
    return node_hash(root_of(leaves[:k]), root_of(leaves[k:]))


def inclusion_proof(index: int, size: int, subtree: SubtreeHash) -> list[bytes]:
    """RFC 6962 PATH(index, D[0:size]): the audit path of leaf `index`."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    path: list[bytes] = []
    start, end, m = 0, size, index
    # Iterative form of PATH: walk down, collecting siblings, then reverse.
    while end - start > 1:
        k = split_point(end - start)
        if m < k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start, m = start + k, m - k
    path.reverse()
    return path


def consistency_proof(old_size: int, new_size: int, subtree: SubtreeHash) -> list[bytes]:
    """RFC 6962 PROOF(old_size, D[0:new_size])."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    start, end, m, complete = 0, new_size, old_size, True
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            proof.append(subtree(start + k, end))
            end = start + k
        else:
            proof.append(subtree(start, start + k))
            start, m, complete = start + k, m - k, False
    if not complete:
        proof.append(subtree(start, end))
    proof.reverse()
    return proof


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes | None:
    """RFC 9162 2.1.3.2: the root implied by an inclusion proof, or None if malformed."""
    if index >= size or index < 0:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """True when `proof` shows leaf hash `leaf` at `index` in the tree of `size` with `root`."""
    return root_from_inclusion(leaf, index, size, proof) == root


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> bool:
    """RFC 9162 2.1.4.2: True when the tree of `old_size` is a prefix of that of `new_size`."""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


class Frontier:
    """The right edge of a growing tree: roots of its perfect subtrees, largest first.

    Appending is amortised O(1) hashes; `root()` is O(log n). `append` returns
    the interior nodes it completed as ``(level, position, hash)`` so a caller
    can store every perfect subtree.
    """

    __slots__ = ("_nodes", "size")
    size: int

    def __init__(self) -> None:
        self._nodes: list[tuple[int, bytes]] = []  # (level, hash)
        self.size = 0

    @classmethod
    def from_nodes(cls, size: int, nodes: Sequence[bytes]) -> Frontier:
        """Rebuild from the perfect-subtree hashes for the set bits of `size`, high to low."""
        levels = [b for b in range(size.bit_length() - 1, -1, -1) if size >> b & 1]
        if len(levels) != len(nodes):
            raise ValueError("frontier nodes do not match the tree size")
        f = cls()
        f._nodes = list(zip(levels, nodes, strict=True))
        f.size = size
        return f

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        completed: list[tuple[int, int, bytes]] = []
        level, h = 0, leaf
        pos = self.size
        while self._nodes and self._nodes[-1][0] == level:
            _, left = self._nodes.pop()
            h = node_hash(left, h)
            level += 1
            pos >>= 1
            completed.append((level, pos, h))
        self._nodes.append((level, h))
        self.size += 1
        return completed

    def root(self) -> bytes:
        if not self._nodes:
            return EMPTY_ROOT
        r = self._nodes[-1][1]
        for _, h in reversed(self._nodes[:-1]):
            r = node_hash(h, r)
        return r

    def copy(self) -> Frontier:
        f = Frontier()
        f._nodes = list(self._nodes)
        f.size = self.size
        return f
