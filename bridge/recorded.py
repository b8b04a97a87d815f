"""Which trades the Settlement contract holds already, asked when the bridge recovers."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from eth_utils.abi import function_signature_to_4byte_selector
from web3 import Web3

from pilotchain.chain import batch_call
from pilotchain.trades import uuid_to_bytes32

IS_RECORDED_SELECTOR = function_signature_to_4byte_selector("isRecorded(bytes32)")


def is_recorded(w3: Web3, url: str, contract: str, trade_ids: Sequence[uuid.UUID]) -> list[bool]:
    """``isRecorded`` of each trade id, as raw eth_calls in one JSON-RPC batch."""
    calls = [("eth_call", [{"to": contract, "data": _calldata(trade_id)}, "latest"])
             for trade_id in trade_ids]
    answers = batch_call(w3, url, "Asking Settlement which trades it has", calls)
    return [int(answer, 16) != 0 for answer in answers]


def _calldata(trade_id: uuid.UUID) -> str:
    return "0x" + (IS_RECORDED_SELECTOR + uuid_to_bytes32(trade_id)).hex()
