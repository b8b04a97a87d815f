"""The chain side of a stream-to-chain worker: batch transactions, pipelined, each watched
to its receipt.

What a batch holds (the bridge's trades for ``recordTrades``, the ingest's meter readings for
``submitReadings``) is a :class:`BatchCodec`'s business; everything else is shared. Several
transactions are in flight at once, each owning a nonce reserved from the shared
:class:`pilotchain.chain.Sender`, sent while the block's gas budget (:mod:`worker.gas`) lasts.
A transaction is re-signed with fresh fees if the node refuses it, sent again if it waits
``replace_after_blocks`` blocks (replaced with fees 13% higher if the base fee has priced it
out), and handed back as finished only when its receipt is ``confirmations`` blocks deep and
still canonical.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import Web3
from web3.types import Wei

from pilotchain.chain import (
    GWEI,
    Fees,
    NodeRefused,
    Sender,
    fees_for,
    read,
    replacement_fees,
)
from worker.gas import GasBudget, ItemGas
from worker.metrics import Metrics
from worker.receipts import Receipt, read_receipts

log = logging.getLogger("worker.writer")
T = TypeVar("T")


class Queued(Protocol):
    """What the writer needs of an item: when it entered the stream (for the latency)."""

    entered_ms: int


I = TypeVar("I", bound=Queued)  # noqa: E741
I_contra = TypeVar("I_contra", bound=Queued, contravariant=True)


class BatchCodec(Protocol[I_contra]):
    """How items become one transaction's calldata, and what an item may cost in gas."""

    @property
    def item_gas(self) -> ItemGas: ...

    def calldata(self, items: Sequence[I_contra]) -> bytes: ...


class WriterSettings(Protocol):
    """The settings the writer reads (each writing service's settings have them all)."""

    @property
    def max_batch(self) -> int: ...
    @property
    def gas_budget(self) -> float: ...
    @property
    def max_in_flight(self) -> int: ...
    @property
    def confirmations(self) -> int: ...
    @property
    def priority_fee_gwei(self) -> float: ...
    @property
    def replace_after_blocks(self) -> int: ...

# Blocks a mined nonce may lack its receipt before the batch counts as displaced.
ORPHAN_AFTER_BLOCKS = 5
# Refusals after which the same nonce must be signed again with fresh fees.
FEE_REFUSALS = ("underpriced", "fee cap", "max fee per gas less than", "tip higher")


@dataclass(slots=True)
class Attempt:
    """One signed version of a transaction (the first, or a fee-bumped replacement)."""

    tx_hash: HexBytes
    raw: bytes
    fees: Fees


@dataclass(slots=True)
class Transaction(Generic[I]):
    """A batch in flight: its nonce, its items and every version sent."""

    nonce: int
    items: list[I]
    data: bytes
    gas: int
    attempts: list[Attempt] = field(default_factory=list)
    accepted: bool = False
    sent_head: int = 0
    refusal: str | None = None
    receipt: Receipt | None = None
    unfound_since: int = 0  # head when its nonce was first seen mined without its receipt


@dataclass(frozen=True, slots=True)
class Outcome(Generic[I]):
    """A transaction whose receipt is deep enough to act on."""

    transaction: Transaction[I]
    receipt: Receipt

    @property
    def succeeded(self) -> bool:
        return self.receipt.status == 1


class ChainWriter(Generic[I]):
    """Sends batches with one account's key and follows them until they are final;
    ``service`` names the writer in messages."""

    def __init__(self, w3: Web3, sender: Sender, contract: Any, settings: WriterSettings,
                 metrics: Metrics, url: str, codec: BatchCodec[I], service: str) -> None:
        self.w3 = w3
        self.service = service
        self.sender = sender
        self.contract = contract
        self.contract_address: ChecksumAddress = contract.address
        self.settings = settings
        self.metrics = metrics
        self.url = url
        self.tip = int(settings.priority_fee_gwei * GWEI)
        self.codec = codec
        self.in_flight: dict[int, Transaction[I]] = {}
        self.head = 0
        self.base_fee = 0
        self.budget = GasBudget(settings.gas_budget, codec.item_gas)

    @property
    def sender_address(self) -> ChecksumAddress:
        """The service's account, which signs every batch."""
        return self.sender.address

    # -- chain reads ------------------------------------------------------------------

    def read(self, action: str, fn: Callable[[], T]) -> T:
        """A chain read with node failures turned into ChainError sentences."""
        return read(self.url, action, fn)

    def refresh(self) -> bool:
        """Follow the head; on a new block, renew the gas budget. True if the head moved."""
        head = self.read("Reading the block number", lambda: self.w3.eth.block_number)
        if head <= self.head and self.budget.block_gas_limit:
            return False
        block = self.read("Reading the latest block", lambda: self.w3.eth.get_block(head))
        self.head = head
        self.base_fee = int(block["baseFeePerGas"])
        self.budget.renew(int(block["gasLimit"]))
        self.metrics.set(last_block=head, base_fee_gwei=round(self.base_fee / GWEI, 9))
        return True

    # -- sending ------------------------------------------------------------------------

    def room(self) -> int:
        """How many items may go out now (0 while the pipeline or this block is full)."""
        if len(self.in_flight) >= self.settings.max_in_flight:
            return 0
        if any(not tx.accepted for tx in self.in_flight.values()):
            return 0  # a nonce the node has not taken holds back everything after it
        return max(0, min(self.budget.items(), self.settings.max_batch))

    def submit(self, items: list[I]) -> None:
        """Sign and send one batch with a freshly reserved nonce."""
        data = self.codec.calldata(items)
        nonce = self.sender.reserve_nonce()
        tx = Transaction(nonce, items, data, self.codec.item_gas.limit_for(data, len(items)))
        self.in_flight[nonce] = tx
        self.budget.spend(len(items))
        self.metrics.add("batches")
        self._attempt(tx, self._fresh_fees())

    def _fresh_fees(self) -> Fees:
        # Twice the base fee rides out six full blocks of 12.5% rises before replacement.
        return fees_for(self.base_fee, priority_fee=self.tip)

    def _attempt(self, tx: Transaction[I], fees: Fees) -> None:
        """Sign ``tx`` with ``fees`` and send it; remember the version either way."""
        signed = self.sender.sign({"to": self.contract_address, "data": HexBytes(tx.data),
                                   "gas": tx.gas, "value": Wei(0)}, tx.nonce, fees)
        tx.attempts.append(Attempt(HexBytes(signed.hash), bytes(signed.raw_transaction), fees))
        self._send(tx, tx.attempts[-1])

    def _send(self, tx: Transaction[I], attempt: Attempt) -> None:
        """Submit one version; a refusal is noted on ``tx`` and retried by ``poll``."""
        try:
            self.sender.send_raw(attempt.raw)
        except NodeRefused as refused:
            reason = refused.reason
            if "nonce too low" in reason or "replacement transaction underpriced" in reason:
                # The nonce is mined already, or an earlier version of ours waits in the
                # pool: either way poll() follows it through the receipts.
                tx.accepted, tx.refusal = True, None
                return
            tx.accepted, tx.refusal = False, reason
            log.warning("The node refused batch transaction nonce %d (%d items): %s",
                        tx.nonce, len(tx.items), reason)
            return
        tx.accepted, tx.refusal = True, None
        tx.sent_head = self.head

    # -- following ----------------------------------------------------------------------

    def poll(self) -> tuple[list[Outcome[I]], list[I]]:
        """Check the transactions in flight: (final outcomes, items to send again)."""
        if not self.in_flight:
            return [], []
        mined_below = self.read(f"Reading the {self.service} account's nonce",
                                lambda: self.w3.eth.get_transaction_count(
                                    self.sender_address, "latest"))
        ordered = sorted(self.in_flight.values(), key=lambda t: t.nonce)
        receipts = read_receipts(self.w3, self.url, self.contract_address,
                                 self._hashes_to_check(ordered, mined_below))
        finished: list[Outcome[I]] = []
        orphaned: list[I] = []
        for tx in ordered:
            if tx.receipt is None and tx.nonce < mined_below:
                if not self._found(tx, receipts):
                    # geth indexes a block's transactions after the block: a receipt can
                    # trail the nonce by a moment. Only a lasting absence means another
                    # transaction took the nonce.
                    tx.unfound_since = tx.unfound_since or self.head
                    if self.head - tx.unfound_since >= ORPHAN_AFTER_BLOCKS:
                        orphaned.extend(self._orphan(tx))
                    continue
            if tx.receipt is not None:
                outcome = self._final(tx, receipts)
                if outcome is not None:
                    finished.append(outcome)
                    del self.in_flight[tx.nonce]
            elif not tx.accepted:
                self._retry(tx)
            elif self.head - tx.sent_head >= self.settings.replace_after_blocks:
                self._unstick(tx)
        self._update_gauges()
        return finished, orphaned

    def _hashes_to_check(self, ordered: Sequence[Transaction[I]], mined_below: int) -> list[str]:
        """Receipts this poll needs: every version of a newly mined nonce, and those of
        receipts now deep enough to confirm."""
        hashes: list[str] = []
        for tx in ordered:
            if tx.receipt is None and tx.nonce < mined_below:
                hashes.extend(attempt.tx_hash.to_0x_hex() for attempt in tx.attempts)
            elif tx.receipt is not None and self._deep_enough(tx.receipt):
                hashes.append(tx.receipt.tx_hash)
        return hashes

    def _found(self, tx: Transaction[I], receipts: dict[str, Receipt | None]) -> bool:
        """Take the receipt of any version of ``tx`` (newest first) if there is one."""
        for attempt in reversed(tx.attempts):
            receipt = receipts.get(attempt.tx_hash.to_0x_hex())
            if receipt is not None:
                tx.receipt = receipt
                self._observe(tx, receipt)
                return True
        return False

    def _observe(self, tx: Transaction[I], receipt: Receipt) -> None:
        """First sight of a receipt: latency of each item, and what an item really costs."""
        now_ms = time.time() * 1000
        for item in tx.items:
            self.metrics.latency(max(0.0, (now_ms - item.entered_ms) / 1000))
        if receipt.status == 1 and tx.items:
            self.budget.observe(receipt.gas_used, len(tx.items))
            self.metrics.set(gas_per_item=round(self.budget.gas_per_item))

    def _deep_enough(self, receipt: Receipt) -> bool:
        return self.head >= receipt.block_number + self.settings.confirmations

    def _final(self, tx: Transaction[I], receipts: dict[str, Receipt | None]) -> Outcome[I] | None:
        """The outcome once the receipt is deep enough and still on the canonical chain."""
        receipt = tx.receipt
        assert receipt is not None
        if not self._deep_enough(receipt):
            return None
        if self.settings.confirmations:
            current = receipts.get(receipt.tx_hash, receipt)
            if current is None or current.block_hash != receipt.block_hash:
                # A reorganisation moved it: wait for its new block (or its return).
                tx.receipt = current
                return None
        return Outcome(tx, receipt)

    def _orphan(self, tx: Transaction[I]) -> list[I]:
        """The nonce was used by a transaction not of this writer: send the items again."""
        log.warning("Nonce %d of the %s account was used by another transaction; "
                    "sending its %d items again.", tx.nonce, self.service, len(tx.items))
        del self.in_flight[tx.nonce]
        return tx.items

    def _retry(self, tx: Transaction[I]) -> None:
        """Send a version the node has not taken yet again (fresh fees if fees were why)."""
        if tx.refusal is not None and any(word in tx.refusal for word in FEE_REFUSALS):
            self._attempt(tx, self._fresh_fees())
        else:
            self._send(tx, tx.attempts[-1])

    def _unstick(self, tx: Transaction[I]) -> None:
        """Waited too long. Priced out (the base fee rose above its max fee): the same batch
        at the same nonce with fees 13% higher. Otherwise the node may have lost it (a
        restart): the same bytes again, since a new version would restart its propagation
        (geth only announces transactions over 4 KiB; peers fetch them half a second later).
        """
        last = tx.attempts[-1]
        if last.fees.max_fee_per_gas >= self.base_fee:
            log.info("Batch transaction nonce %d not mined after %d blocks; sending it again.",
                     tx.nonce, self.head - tx.sent_head)
            self._send(tx, last)
            return
        fees = replacement_fees(last.fees, self._fresh_fees())
        log.info("Batch transaction nonce %d priced out by the base fee (%.3f gwei); replacing "
                 "it with max fee %.3f gwei.", tx.nonce, self.base_fee / GWEI,
                 fees.max_fee_per_gas / GWEI)
        self.metrics.add("replacements")
        self._attempt(tx, fees)

    def refusal(self) -> str | None:
        """The node's reason for refusing a transaction still waiting to be taken, if any."""
        for tx in self.in_flight.values():
            if tx.refusal is not None:
                return f"The node refuses the {self.service}'s transactions: {tx.refusal}."
        return None

    def _update_gauges(self) -> None:
        self.metrics.set(in_flight_transactions=len(self.in_flight),
                         in_flight_items=self.items_in_flight())

    def items_in_flight(self) -> int:
        return sum(len(tx.items) for tx in self.in_flight.values())
