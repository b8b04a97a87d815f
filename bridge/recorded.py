"""Which trades the Settlement contract holds already, asked when the bridge recovers."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from web3 import Web3

from pilotchain.settlement import Settlement, SettlementABI


def is_recorded(w3: Web3, url: str, contract: Any, trade_ids: Sequence[uuid.UUID]) -> list[bool]:
    """``isRecorded`` of each trade id, as raw eth_calls in one JSON-RPC batch."""
    settlement = Settlement(w3, url, contract.address, SettlementABI(contract.abi))
    return settlement.read_all([settlement.abi.is_recorded(trade_id) for trade_id in trade_ids],
                               "Asking Settlement which trades it has")
