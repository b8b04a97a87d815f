"""The root hash of an Ethereum Merkle Patricia trie, for the genesis block's state root.

Only what a genesis needs: the root of a complete key/value set, built in memory (no proofs,
no updates, no database). Each node is RLP-encoded and referred to by its keccak hash, or
embedded whole when its encoding is shorter than 32 bytes (the yellow paper, appendix D).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import rlp
from eth_utils.crypto import keccak

# rlp's own type for a nested node: bytes or lists of them.
Node = bytes | list["Node"]

EMPTY_ROOT = keccak(rlp.encode(b""))


def trie_root(items: Mapping[bytes, bytes]) -> bytes:
    """The root hash of the trie holding ``items`` (keys already hashed for a secure trie)."""
    if not items:
        return EMPTY_ROOT
    entries = sorted((_nibbles(key), value) for key, value in items.items())
    return keccak(rlp.encode(_node(entries, 0)))


def _nibbles(key: bytes) -> tuple[int, ...]:
    return tuple(half for byte in key for half in (byte >> 4, byte & 0x0F))


def _hex_prefix(nibbles: Sequence[int], leaf: bool) -> bytes:
    """The compact encoding of a path: a flag nibble (leaf, odd length), then the nibbles."""
    flag = 2 if leaf else 0
    if len(nibbles) % 2:
        nibbles = [flag + 1, *nibbles]
    else:
        nibbles = [flag, 0, *nibbles]
    return bytes(nibbles[i] << 4 | nibbles[i + 1] for i in range(0, len(nibbles), 2))


def _node(entries: list[tuple[tuple[int, ...], bytes]], depth: int) -> Node:
    """The node holding ``entries`` (sorted, sharing their first ``depth`` nibbles)."""
    if len(entries) == 1:
        path, value = entries[0]
        return [_hex_prefix(path[depth:], leaf=True), value]
    shared = _shared_prefix([path[depth:] for path, _ in entries])
    if shared:
        return [_hex_prefix(entries[0][0][depth:depth + shared], leaf=False),
                _reference(_node(entries, depth + shared))]
    branches: list[list[tuple[tuple[int, ...], bytes]]] = [[] for _ in range(16)]
    value = b""
    for path, item in entries:
        if len(path) == depth:
            value = item
        else:
            branches[path[depth]].append((path, item))
    children: list[Node] = [_reference(_node(b, depth + 1)) if b else b"" for b in branches]
    return [*children, value]


def _shared_prefix(paths: list[tuple[int, ...]]) -> int:
    """How many leading nibbles every path shares (never more than the shortest has)."""
    length = 0
    for column in zip(*paths, strict=False):
        if len(set(column)) != 1:
            break
        length += 1
    return length


def _reference(node: Node) -> Node:
    """How a parent refers to ``node``: embedded if its encoding is short, else its hash."""
    encoded = rlp.encode(node)
    return node if len(encoded) < 32 else keccak(encoded)
