"""Receipts of batch transactions, read in one JSON-RPC batch per poll."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from web3 import Web3

from pilotchain.chain import batch_call


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the writer needs of a receipt, read from the node's raw JSON: web3's formatting
    of a full batch's 400 logs costs a quarter of a second, the raw parse milliseconds."""

    tx_hash: str
    status: int
    block_number: int
    block_hash: str
    gas_used: int
    # The contract's raw logs ({"topics": [...], "data": "0x..."}): a codec reads from them
    # what became of each item (the bridge its BatchRecorded, the ingest each reading's event).
    logs: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_json(cls, raw: dict[str, Any], contract: str) -> Receipt:
        own = tuple(entry for entry in raw.get("logs") or ()
                    if entry.get("address", "").lower() == contract.lower())
        return cls(tx_hash=raw["transactionHash"], status=int(raw["status"], 16),
                   block_number=int(raw["blockNumber"], 16), block_hash=raw["blockHash"],
                   gas_used=int(raw["gasUsed"], 16), logs=own)


def read_receipts(w3: Web3, url: str, contract: str,
                  hashes: Sequence[str]) -> dict[str, Receipt | None]:
    """Receipts by transaction hash (None: not mined, or not indexed yet), in one JSON-RPC
    batch: one round trip however many transactions are in flight."""
    results = batch_call(w3, url, "Reading receipts",
                         [("eth_getTransactionReceipt", [tx_hash]) for tx_hash in hashes])
    return {tx_hash: None if raw is None else Receipt.from_json(raw, contract)
            for tx_hash, raw in zip(hashes, results, strict=True)}
