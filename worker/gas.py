"""Gas for batch transactions: each transaction's limit, and how much to send per block.

Every kind of batch item is sized alike: a worst-case gas per item (:class:`ItemGas`, the
service's) gives each transaction's limit, and a :class:`GasBudget` per block counts in items
at what an item has been seen to cost.

Gas limits come from the contract's worst case, not from ``eth_estimateGas``: an estimate
would execute every batch once more on the RPC node, which on a 2-core machine competes with
the nodes for the very CPU the throughput needs. Per new block a writer spends at most its
gas budget (``BRIDGE_GAS_BUDGET``, ``INGEST_GAS_BUDGET``) x the gas target (half the block gas
limit, EIP-1559), so blocks stay at or under the target on average and the base fee does not
climb. Only used gas counts against the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

# Dispatch, the array head and the batch's event; per transaction, not per item.
BATCH_OVERHEAD_GAS = 12_000
TRANSACTION_GAS = 21_000


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


def calldata_gas(data: bytes) -> int:
    """Intrinsic calldata gas since Istanbul: 4 per zero byte, 16 per other byte."""
    zeros = data.count(0)
    return 4 * zeros + 16 * (len(data) - zeros)


class GasBudget:
    """The gas a writer may still spend in the current block, counted in items (trades,
    readings) at what an item has been seen to cost."""

    def __init__(self, share_of_target: float, item_gas: ItemGas) -> None:
        self.share_of_target = share_of_target
        self.item_gas = item_gas
        self.block_gas_limit = 0  # 0 until the first block is known
        self.remaining = 0.0
        self.gas_per_item = item_gas.initial_guess

    def renew(self, block_gas_limit: int) -> None:
        """A new block: a fresh budget of the configured share of its gas target."""
        self.block_gas_limit = block_gas_limit
        self.remaining = self.share_of_target * block_gas_limit / 2

    def items(self) -> int:
        """How many items the rest of this block's budget pays for, at most one block's
        worth of worst-case gas."""
        by_budget = int(self.remaining // self.gas_per_item)
        return max(0, min(by_budget, self.item_gas.max_items(self.block_gas_limit)))

    def spend(self, items: int) -> None:
        self.remaining -= items * self.gas_per_item

    def observe(self, gas_used: int, items: int) -> None:
        """A successful batch's receipt: follow what an item really costs."""
        observed = gas_used / items
        self.gas_per_item = 0.7 * self.gas_per_item + 0.3 * observed
