"""RFC 6962 hashing and proofs: published vectors, then every size and index up to 40."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ledger import merkle

# Certificate Transparency reference data (RFC 6962 test vectors): leaves and roots for 1..8.
CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_PROOF_5_OF_8 = [
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
]
CT_PROOF_0_OF_8 = [
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
]

LEAF_HASHES = [merkle.leaf_hash(x) for x in CT_LEAVES]


def subtree_of(leaves: list[bytes]) -> merkle.SubtreeHash:
    return lambda a, b: merkle.root_of(leaves[a:b])


def test_reference_roots_recursive_and_incremental() -> None:
    assert merkle.root_of([]) == hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT
    frontier = merkle.Frontier()
    for n in range(1, 9):
        assert merkle.root_of(LEAF_HASHES[:n]).hex() == CT_ROOTS[n - 1]
        frontier.append(LEAF_HASHES[n - 1])
        assert frontier.root().hex() == CT_ROOTS[n - 1]


def test_reference_inclusion_proofs() -> None:
    sub = subtree_of(LEAF_HASHES)
    root = bytes.fromhex(CT_ROOTS[7])
    for index, expected in ((5, CT_PROOF_5_OF_8), (0, CT_PROOF_0_OF_8)):
        proof = merkle.inclusion_proof(index, 8, sub)
        assert [p.hex() for p in proof] == expected
        assert merkle.verify_inclusion(LEAF_HASHES[index], index, 8, proof, root)


def test_every_proof_up_to_40_leaves_and_nothing_wrong_verifies() -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(2, "big")) for i in range(40)]
    sub = subtree_of(leaves)
    roots = [merkle.root_of(leaves[:n]) for n in range(41)]
    for n in range(1, 41):
        for i in range(n):
            proof = merkle.inclusion_proof(i, n, sub)
            assert merkle.verify_inclusion(leaves[i], i, n, proof, roots[n])
            # wrong index, wrong leaf, wrong size, truncated or tampered path
            assert not merkle.verify_inclusion(leaves[i], (i + 1) % n, n, proof, roots[n]) or n == 1
            assert not merkle.verify_inclusion(leaves[(i + 1) % 40], i, n, proof, roots[n])
            if n < 40:  # a proof for size n does not prove inclusion in the tree of n + 1
                assert not merkle.verify_inclusion(leaves[i], i, n + 1, proof, roots[n + 1])
            if proof:
                assert not merkle.verify_inclusion(leaves[i], i, n, proof[:-1], roots[n])
                bad = [*proof[:-1], bytes(32)]
                assert not merkle.verify_inclusion(leaves[i], i, n, bad, roots[n])
        for m in range(0, n + 1):
            proof = merkle.consistency_proof(m, n, sub)
            assert merkle.verify_consistency(m, n, proof, roots[m], roots[n])
            if 0 < m < n:
                assert not merkle.verify_consistency(m, n, proof, roots[m - 1], roots[n])
                assert not merkle.verify_consistency(m, n, proof, roots[m], roots[n - 1])
                assert not merkle.verify_consistency(m, n, proof[:-1], roots[m], roots[n])


@settings(deadline=None)  # a loaded CI box must not turn slowness into failure
@given(st.lists(st.binary(max_size=8), min_size=1, max_size=70))
def test_frontier_nodes_are_the_perfect_subtrees(entries: list[bytes]) -> None:
    leaves = [merkle.leaf_hash(e) for e in entries]
    frontier = merkle.Frontier()
    for i, leaf in enumerate(leaves):
        for level, pos, h in frontier.append(leaf):
            assert h == merkle.root_of(leaves[pos << level : (pos + 1) << level])
        assert frontier.root() == merkle.root_of(leaves[: i + 1])


def test_out_of_range_requests_are_errors() -> None:
    sub = subtree_of(LEAF_HASHES)
    with pytest.raises(ValueError, match="not in a tree of size 8"):
        merkle.inclusion_proof(8, 8, sub)
    with pytest.raises(ValueError, match="from size 9 to 8"):
        merkle.consistency_proof(9, 8, sub)
    assert merkle.root_from_inclusion(LEAF_HASHES[0], 3, 2, []) is None
