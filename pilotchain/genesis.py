"""Build the Clique genesis file the nodes are initialised from."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from eth_utils.address import to_checksum_address

from pilotchain.config import ChainSettings

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
