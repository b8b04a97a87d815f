"""Gas for batch transactions: each transaction's limit, and how much to send per block.

The bridge's trades and the ingest's meter readings are sized alike: a worst-case gas per
item (:class:`ItemGas`) gives each transaction's limit, and a :class:`GasBudget` per block
counts in items at what an item has been seen to cost.

Gas limits come from the contract's worst case, not from ``eth_estimateGas``: an estimate
would execute every batch once more on the RPC node, which on a 2-core machine competes with
the nodes for the very CPU the throughput needs. Per new block the bridge spends at most
``BRIDGE_GAS_BUDGET`` x the gas target (half the block gas limit, EIP-1559), so blocks stay
at or under the target on average and the base fee does not climb. Only used gas counts
against the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from pilotchain.contract import CALLDATA_BYTES_PER_TRADE

# Execution gas of one trade at worst (measured 178.2k on a London EVM by
# tests/test_metering_contract.py, which fails if a trade ever costs more): a new trade id
# between two metered parties, the first across their meters in its slot, and the first change
# of both bills after a period was closed, which first stores the closed period's amounts. A
# plain trade costs about 32k; only gas used counts against the budget, so the margin costs
# nothing but batch size.
WORST_GAS_PER_TRADE = 190_000
# Dispatch, the array head and the BatchRecorded event; per transaction, not per trade.
BATCH_OVERHEAD_GAS = 12_000
TRANSACTION_GAS = 21_000
# A fresh bridge guesses this until its first receipt tells (steady state is ~32k).
INITIAL_GAS_PER_TRADE = 40_000.0


@dataclass(frozen=True)
class ItemGas:
    """The gas of one kind of batch item: its worst case, its calldata and a first guess."""

    worst: int
    calldata_bytes: int
    initial_guess: float

    def limit_for(self, data: bytes, items: int) -> int:
        """A gas limit no batch of ``items`` can exceed, whatever state it meets."""
        return TRANSACTION_GAS + calldata_gas(data) + BATCH_OVERHEAD_GAS + items * self.worst

    def max_items(self, block_gas_limit: int) -> int:
        """The largest batch whose worst-case gas limit fits in half a block (the gas target).

        A signer takes a transaction only while its gas limit fits in what the block has left,
        so batches with limits of a whole block would go one per block, however little gas each
        uses; at half a block, batches keep fitting until the block has used its target."""
        room = block_gas_limit // 2 - TRANSACTION_GAS - BATCH_OVERHEAD_GAS
        return max(1, room // (self.worst + 16 * self.calldata_bytes))


TRADE_GAS = ItemGas(WORST_GAS_PER_TRADE, CALLDATA_BYTES_PER_TRADE, INITIAL_GAS_PER_TRADE)


def calldata_gas(data: bytes) -> int:
    """Intrinsic calldata gas since Istanbul: 4 per zero byte, 16 per other byte."""
    zeros = data.count(0)
    return 4 * zeros + 16 * (len(data) - zeros)


def gas_limit_for(data: bytes, trades: int) -> int:
    """A gas limit no batch of ``trades`` can exceed, whatever state it meets."""
    return TRADE_GAS.limit_for(data, trades)


def max_trades_for_gas(block_gas_limit: int) -> int:
    """The largest batch of trades whose worst-case gas limit still fits in a block."""
    return TRADE_GAS.max_items(block_gas_limit)


class GasBudget:
    """The gas a writer may still spend in the current block, counted in items (trades,
    readings) at what an item has been seen to cost."""

    def __init__(self, share_of_target: float, item_gas: ItemGas = TRADE_GAS) -> None:
        self.share_of_target = share_of_target
        self.item_gas = item_gas
        self.block_gas_limit = 0  # 0 until the first block is known
        self.remaining = 0.0
        self.gas_per_trade = item_gas.initial_guess

    def renew(self, block_gas_limit: int) -> None:
        """A new block: a fresh budget of the configured share of its gas target."""
        self.block_gas_limit = block_gas_limit
        self.remaining = self.share_of_target * block_gas_limit / 2

    def trades(self) -> int:
        """How many trades the rest of this block's budget pays for, at most one block's
        worth of worst-case gas."""
        by_budget = int(self.remaining // self.gas_per_trade)
        return max(0, min(by_budget, self.item_gas.max_items(self.block_gas_limit)))

    def spend(self, trades: int) -> None:
        self.remaining -= trades * self.gas_per_trade

    def observe(self, gas_used: int, trades: int) -> None:
        """A successful batch's receipt: follow what a trade really costs."""
        observed = gas_used / trades
        self.gas_per_trade = 0.7 * self.gas_per_trade + 0.3 * observed
