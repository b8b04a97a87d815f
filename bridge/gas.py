"""What a trade costs in gas: the worst case that sizes every ``recordTrades`` transaction
(see :mod:`worker.gas` for how a budget per block spends it)."""

from __future__ import annotations

from pilotchain.contract import CALLDATA_BYTES_PER_TRADE
from worker.gas import ItemGas

# Execution gas of one trade at worst (measured 178.2k on a London EVM by
# tests/test_metering_contract.py, which fails if a trade ever costs more): a new trade id
# between two metered parties, the first across their meters in its slot, and the first change
# of both bills after a period was closed, which first stores the closed period's amounts. A
# plain trade costs about 32k; only gas used counts against the budget, so the margin costs
# nothing but batch size.
WORST_GAS_PER_TRADE = 190_000
# A fresh bridge guesses this until its first receipt tells (steady state is ~32k).
INITIAL_GAS_PER_TRADE = 40_000.0

TRADE_GAS = ItemGas(WORST_GAS_PER_TRADE, CALLDATA_BYTES_PER_TRADE, INITIAL_GAS_PER_TRADE)


def gas_limit_for(data: bytes, trades: int) -> int:
    """A gas limit no batch of ``trades`` can exceed, whatever state it meets."""
    return TRADE_GAS.limit_for(data, trades)


def max_trades_for_gas(block_gas_limit: int) -> int:
    """The largest batch of trades whose worst-case gas limit still fits in a block."""
    return TRADE_GAS.max_items(block_gas_limit)
