"""Build the Clique genesis file the nodes are initialised from, and compute its block hash."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import rlp
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from pilotchain.config import ChainSettings
from pilotchain.errors import NetworkError
from pilotchain.trie import EMPTY_ROOT, trie_root

# Every fork up to London at block 0: Clique in geth 1.13 refuses Shanghai and later.
FORKS = (
    "homesteadBlock",
    "eip150Block",
    "eip155Block",
    "eip158Block",
    "byzantiumBlock",
    "constantinopleBlock",
    "petersburgBlock",
    "istanbulBlock",
    "berlinBlock",
    "londonBlock",
)
ETHER = 10**18
# Block 1 may be sealed only a period after the genesis timestamp. Placing that moment a
# few seconds after init lets freshly started signers connect first; otherwise each seals
# its own block 1 at once and the equal-difficulty forks take a sync cycle (10 s) to resolve.
GENESIS_START_DELAY = 4
# What the service accounts start with; the faucet hands out the bulk of it.
PREFUND = {"faucet": 1_000_000 * ETHER, "bridge": 100_000 * ETHER, "operator": 100_000 * ETHER}


def clique_extra_data(signers: list[str]) -> str:
    """32 vanity bytes, the signers sorted by address, 65 bytes for the (absent) seal."""
    ordered = sorted(bytes.fromhex(address[2:]) for address in signers)
    return "0x" + "00" * 32 + "".join(raw.hex() for raw in ordered) + "00" * 65


def build_genesis(settings: ChainSettings, signers: list[str], funded: dict[str, str],
                  *, timestamp: int | None = None) -> dict[str, Any]:
    """The genesis document for ``signers``, prefunding ``funded`` (role name -> address)."""
    if timestamp is None:
        timestamp = max(0, int(time.time()) + GENESIS_START_DELAY - settings.block_period)
    config: dict[str, object] = {"chainId": settings.chain_id}
    config.update({fork: 0 for fork in FORKS})
    config["clique"] = {"period": settings.block_period, "epoch": settings.epoch}
    alloc = {
        to_checksum_address(address)[2:].lower(): {"balance": hex(PREFUND[role])}
        for role, address in funded.items()
    }
    return {
        "config": config,
        "nonce": "0x0",
        "timestamp": hex(timestamp),
        "extraData": clique_extra_data(signers),
        "gasLimit": hex(settings.gas_limit),
        "difficulty": "0x1",
        "coinbase": "0x" + "00" * 20,
        "alloc": alloc,
    }


def write_genesis(path: Path, genesis: dict[str, Any]) -> None:
    path.write_text(json.dumps(genesis, indent=2) + "\n")


def read_genesis(path: Path) -> dict[str, Any]:
    genesis: dict[str, Any] = json.loads(path.read_text())
    return genesis


# What geth puts in a genesis header where genesis.json says nothing (core/genesis.go).
EMPTY_UNCLES_HASH = keccak(rlp.encode([]))
EMPTY_CODE_HASH = keccak(b"")
INITIAL_BASE_FEE = 10**9  # params.InitialBaseFee, the base fee of London's first block
DEFAULT_DIFFICULTY = 131_072  # params.GenesisDifficulty
DEFAULT_GAS_LIMIT = 5_000  # params.GenesisGasLimit


def genesis_hash(genesis: dict[str, Any]) -> str:
    """The hash of the block ``geth init`` makes from ``genesis`` (0x-hex), computed here so
    the coordinator and every host can compare genesis files without starting geth.

    Covers the forks this chain can have (up to London: no withdrawals or blob fields).
    """
    config = genesis.get("config", {})
    if any(fork in config for fork in ("shanghaiTime", "cancunTime", "pragueTime")):
        raise NetworkError("The genesis enables a fork after London, which Clique refuses.")
    header: list[object] = [
        _bytes(genesis.get("parentHash"), 32),
        EMPTY_UNCLES_HASH,
        _bytes(genesis.get("coinbase"), 20),
        _state_root(genesis.get("alloc", {})),
        EMPTY_ROOT,  # transactions
        EMPTY_ROOT,  # receipts
        bytes(256),  # bloom
        _int(genesis.get("difficulty")) or DEFAULT_DIFFICULTY,
        _int(genesis.get("number")),
        _int(genesis.get("gasLimit")) or DEFAULT_GAS_LIMIT,
        _int(genesis.get("gasUsed")),
        _int(genesis.get("timestamp")),
        _bytes(genesis.get("extraData"), None),
        _bytes(genesis.get("mixHash"), 32),
        _int(genesis.get("nonce")).to_bytes(8, "big"),
    ]
    if "londonBlock" in config and _int(config["londonBlock"]) == _int(genesis.get("number")):
        header.append(_int(genesis.get("baseFeePerGas")) or INITIAL_BASE_FEE)
    return "0x" + keccak(rlp.encode(header)).hex()


def _state_root(alloc: dict[str, Any]) -> bytes:
    accounts = {}
    for address, account in alloc.items():
        storage = {keccak(_bytes(slot, 32)): rlp.encode(_bytes(value, 32).lstrip(b"\0"))
                   for slot, value in account.get("storage", {}).items()
                   if _int(value)}
        code = _bytes(account.get("code"), None)
        accounts[keccak(_bytes(address, 20))] = rlp.encode([
            _int(account.get("nonce")), _int(account.get("balance")),
            trie_root(storage), keccak(code) if code else EMPTY_CODE_HASH])
    return trie_root(accounts)


def _int(value: object) -> int:
    """A genesis number: JSON integer, 0x-hex or decimal string, absent meaning 0."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value)
    return int(text, 16) if text.lower().startswith("0x") else int(text)


def _bytes(value: object, size: int | None) -> bytes:
    """0x-hex (with or without the prefix) as bytes, left-padded to ``size`` if given."""
    text = str(value or "").removeprefix("0x").removeprefix("0X")
    raw = bytes.fromhex(text if len(text) % 2 == 0 else "0" + text)
    return raw.rjust(size, b"\0") if size is not None else raw
