"""Why a batch reverted: replay it as an eth_call and read the contract's revert."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError
from web3.types import TxParams

from bridge.errors import BatchReverted, RecorderRoleMissing
from pilotchain.chain import read
from pilotchain.contract import revert_data
from pilotchain.settlement import SettlementABI
from pilotchain.trades import TradeRecord


def refused_trade(w3: Web3, url: str, contract: Any, sender: str,
                  records: Sequence[TradeRecord]) -> int | None:
    """Why a batch of ``records`` sent by ``sender`` to ``contract`` reverts now: the index
    of a trade the contract refuses, or None if it goes through (it ran short of gas or met
    other state). Fatal reasons raise: a missing recorder role, any other revert."""
    abi = SettlementABI(contract.abi)
    request: TxParams = {"from": sender, "to": contract.address,
                         "data": HexBytes(abi.record_trades(records))}
    try:
        read(url, "Checking a reverted batch", lambda: w3.eth.call(request))
    except ContractLogicError as error:
        revert = abi.decode_revert(revert_data(error))
        if revert.name == "InvalidTrade":
            return int(revert.args["index"])
        reason = str(revert)
        if "AccessControl" in reason:
            raise RecorderRoleMissing(
                f"The Settlement contract at {contract.address} refuses the bridge account "
                f"{sender} ({reason}); the operator must grant it RECORDER_ROLE."
            ) from None
        raise BatchReverted(
            f"A batch of {len(records)} trades reverts in Settlement at {contract.address}: "
            f"{reason}. The trades stay unacknowledged in the stream."
        ) from None
    return None

