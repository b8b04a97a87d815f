"""Why a batch reverted: replay it as an eth_call and read the contract's revert."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.abi import function_signature_to_4byte_selector
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError
from web3.types import TxParams

from bridge.errors import BatchReverted, RecorderRoleMissing
from pilotchain.chain import read
from pilotchain.contract import describe_revert, record_trades_calldata, revert_data
from pilotchain.trades import TradeRecord

INVALID_TRADE_SELECTOR = function_signature_to_4byte_selector("InvalidTrade(uint256)")


def refused_trade(w3: Web3, url: str, contract: Any, sender: str,
                  records: Sequence[TradeRecord]) -> int | None:
    """Why a batch of ``records`` sent by ``sender`` to ``contract`` reverts now: the index
    of a trade the contract refuses, or None if it goes through (it ran short of gas or met
    other state). Fatal reasons raise: a missing recorder role, any other revert."""
    request: TxParams = {"from": sender, "to": contract.address,
                         "data": HexBytes(record_trades_calldata(contract.abi, records))}
    try:
        read(url, "Checking a reverted batch", lambda: w3.eth.call(request))
    except ContractLogicError as error:
        revert = revert_data(error)
        if revert[:4] == INVALID_TRADE_SELECTOR:
            return int(abi_decode(["uint256"], revert[4:])[0])
        reason = describe_revert(contract.abi, revert)
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

