"""The chain side of the bridge: batch transactions, pipelined, each watched to its receipt.

Several ``recordTrades`` transactions are in flight at once, each owning a nonce reserved
from the shared :class:`pilotchain.chain.Sender`. Per new block the writer spends at most
``BRIDGE_GAS_BUDGET`` x the gas target (half the block gas limit, EIP-1559), so blocks stay
at or under the target on average and the base fee does not climb. A transaction is
re-signed with fresh fees if the node refuses it, sent again if it waits
``BRIDGE_REPLACE_AFTER_BLOCKS`` blocks (replaced with fees 13% higher if the base fee has
priced it out), and handed back as finished only when its receipt
is ``BRIDGE_CONFIRMATIONS`` blocks deep and still canonical.

Gas limits come from the contract's worst case, not from ``eth_estimateGas``: an estimate
would execute every batch once more on the RPC node, which on a 2-core machine competes with
the nodes for the very CPU the throughput needs. Only used gas counts against the budget.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector, keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3Exception

from bridge.batching import Item
from bridge.config import BridgeSettings
from bridge.errors import BatchReverted, RecorderRoleMissing
from bridge.metrics import Metrics
from pilotchain.chain import (
    GWEI,
    ChainUnreachable,
    Fees,
    NodeRefused,
    Sender,
    call,
    replacement_fees,
)
from pilotchain.contract import CALLDATA_BYTES_PER_TRADE, describe_revert
from pilotchain.trades import uuid_to_bytes32

log = logging.getLogger("bridge.writer")
T = TypeVar("T")

# Execution gas of one trade at worst (measured 72.6k on a London EVM): a new trade-id slot
# and new selling and buying bill slots (22.1k each), the TradeSettled log and the loop.
WORST_GAS_PER_TRADE = 74_000
# Dispatch, the array head and the BatchRecorded event; per transaction, not per trade.
BATCH_OVERHEAD_GAS = 12_000
TRANSACTION_GAS = 21_000
# A fresh bridge guesses this until its first receipt tells (steady state is ~32k).
INITIAL_GAS_PER_TRADE = 40_000.0
BATCH_RECORDED_TOPIC = keccak(text="BatchRecorded(uint256,uint256)")
INVALID_TRADE_SELECTOR = function_signature_to_4byte_selector("InvalidTrade(uint256)")
IS_RECORDED_SELECTOR = function_signature_to_4byte_selector("isRecorded(bytes32)")
# Blocks a mined nonce may lack its receipt before the batch counts as displaced.
ORPHAN_AFTER_BLOCKS = 5
# Refusals after which the same nonce must be signed again with fresh fees.
FEE_REFUSALS = ("underpriced", "fee cap", "max fee per gas less than", "tip higher")


def calldata_gas(data: bytes) -> int:
    """Intrinsic calldata gas since Istanbul: 4 per zero byte, 16 per other byte."""
    zeros = data.count(0)
    return 4 * zeros + 16 * (len(data) - zeros)


def gas_limit_for(data: bytes, trades: int) -> int:
    """A gas limit no batch of ``trades`` can exceed, whatever state it meets."""
    return TRANSACTION_GAS + calldata_gas(data) + BATCH_OVERHEAD_GAS + trades * WORST_GAS_PER_TRADE


def max_trades_for_gas(block_gas_limit: int) -> int:
    """The largest batch whose worst-case gas limit still fits in a block (with 5% spare)."""
    room = block_gas_limit * 95 // 100 - TRANSACTION_GAS - BATCH_OVERHEAD_GAS
    return max(1, room // (WORST_GAS_PER_TRADE + 16 * CALLDATA_BYTES_PER_TRADE))


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the writer needs of a receipt, read from the node's raw JSON: web3's formatting
    of a full batch's 400 logs costs a quarter of a second, the raw parse milliseconds."""

    tx_hash: str
    status: int
    block_number: int
    block_hash: str
    gas_used: int
    recorded: int | None  # from BatchRecorded; None if the event is missing
    skipped: int | None

    @classmethod
    def from_json(cls, raw: dict[str, Any], contract: str) -> Receipt:
        counts: tuple[int | None, int | None] = (None, None)
        for entry in raw.get("logs") or ():
            topics = entry.get("topics") or ()
            if (entry.get("address", "").lower() == contract.lower() and topics
                    and bytes.fromhex(topics[0][2:]) == BATCH_RECORDED_TOPIC):
                data = bytes.fromhex(entry["data"][2:])
                counts = (int.from_bytes(data[:32], "big"), int.from_bytes(data[32:64], "big"))
        return cls(tx_hash=raw["transactionHash"], status=int(raw["status"], 16),
                   block_number=int(raw["blockNumber"], 16), block_hash=raw["blockHash"],
                   gas_used=int(raw["gasUsed"], 16), recorded=counts[0], skipped=counts[1])


@dataclass(slots=True)
class Attempt:
    """One signed version of a transaction (the first, or a fee-bumped replacement)."""

    tx_hash: HexBytes
    raw: bytes
    fees: Fees


@dataclass(slots=True)
class Transaction:
    """A batch in flight: its nonce, its trades and every version sent."""

    nonce: int
    items: list[Item]
    data: bytes
    gas: int
    attempts: list[Attempt] = field(default_factory=list)
    accepted: bool = False
    sent_head: int = 0
    refusal: str | None = None
    receipt: Receipt | None = None
    unfound_since: int = 0  # head when its nonce was first seen mined without its receipt


@dataclass(frozen=True, slots=True)
class Outcome:
    """A transaction whose receipt is deep enough to act on."""

    transaction: Transaction
    receipt: Receipt

    @property
    def succeeded(self) -> bool:
        return self.receipt.status == 1

    def counts(self) -> tuple[int, int]:
        """(recorded, skipped) from the contract's BatchRecorded event."""
        if self.receipt.recorded is None or self.receipt.skipped is None:
            return len(self.transaction.items), 0
        return self.receipt.recorded, self.receipt.skipped


class ChainWriter:
    """Sends batches with the bridge key and follows them until they are final."""

    def __init__(self, w3: Web3, sender: Sender, contract: Any, settings: BridgeSettings,
                 metrics: Metrics, url: str) -> None:
        self.w3 = w3
        self.sender = sender
        self.contract = contract
        self.address = contract.address
        self.settings = settings
        self.metrics = metrics
        self.url = url
        self.tip = int(settings.priority_fee_gwei * GWEI)
        self.selector, self.argument_type = _record_trades_abi(contract.abi)
        self.in_flight: dict[int, Transaction] = {}
        self.head = 0
        self.base_fee = 0
        self.block_gas_limit = 0
        self.budget = 0.0
        self.gas_per_trade = INITIAL_GAS_PER_TRADE

    # -- chain reads ------------------------------------------------------------------

    def read(self, action: str, fn: Callable[[], T]) -> T:
        """A chain read with node failures turned into ChainError sentences."""
        try:
            return call(self.url, action, fn)
        except requests.RequestException:
            raise ChainUnreachable(
                f"{action} failed: the node at {self.url} answered with an HTTP error."
            ) from None
        except ContractLogicError:
            raise  # a revert is an answer, for the caller to read
        except Web3Exception as error:
            # A malformed or unexpected answer (e.g. a node still starting): retry later.
            raise ChainUnreachable(
                f"{action} failed: unexpected answer from the node at {self.url}: {error}"
            ) from None

    def refresh(self) -> bool:
        """Follow the head; on a new block, renew the gas budget. True if the head moved."""
        head = self.read("Reading the block number", lambda: self.w3.eth.block_number)
        if head <= self.head and self.block_gas_limit:
            return False
        block = self.read("Reading the latest block", lambda: self.w3.eth.get_block(head))
        self.head = head
        self.base_fee = int(block["baseFeePerGas"])
        self.block_gas_limit = int(block["gasLimit"])
        self.budget = self.settings.gas_budget * self.block_gas_limit / 2
        self.metrics.set(last_block=head, base_fee_gwei=round(self.base_fee / GWEI, 9))
        return True

    # -- sending ------------------------------------------------------------------------

    def room(self) -> int:
        """How many trades may go out now (0 while the pipeline or this block is full)."""
        if len(self.in_flight) >= self.settings.max_in_flight:
            return 0
        if any(not tx.accepted for tx in self.in_flight.values()):
            return 0  # a nonce the node has not taken holds back everything after it
        by_budget = int(self.budget // self.gas_per_trade)
        return max(0, min(by_budget, self.settings.max_batch,
                          max_trades_for_gas(self.block_gas_limit)))

    def submit(self, items: list[Item]) -> None:
        """Sign and send one batch with a freshly reserved nonce."""
        data = self.selector + abi_encode([self.argument_type],
                                          [[item.record.as_contract_tuple() for item in items]])
        nonce = self.sender.reserve_nonce()
        tx = Transaction(nonce, items, data, gas_limit_for(data, len(items)))
        self.in_flight[nonce] = tx
        self.budget -= len(items) * self.gas_per_trade
        self.metrics.add("batches")
        self._attempt(tx, self._fresh_fees())

    def _fresh_fees(self) -> Fees:
        # Twice the base fee rides out six full blocks of 12.5% rises before replacement.
        return Fees(2 * self.base_fee + self.tip, self.tip)

    def _attempt(self, tx: Transaction, fees: Fees) -> None:
        """Sign ``tx`` with ``fees`` and send it; remember the version either way."""
        signed = self.sender.sign({"to": self.address, "data": HexBytes(tx.data),
                                   "gas": tx.gas, "value": 0}, tx.nonce, fees)
        tx.attempts.append(Attempt(HexBytes(signed.hash), bytes(signed.raw_transaction), fees))
        self._send(tx, tx.attempts[-1])

    def _send(self, tx: Transaction, attempt: Attempt) -> None:
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
            log.warning("The node refused batch transaction nonce %d (%d trades): %s",
                        tx.nonce, len(tx.items), reason)
            return
        tx.accepted, tx.refusal = True, None
        tx.sent_head = self.head

    # -- following ----------------------------------------------------------------------

    def poll(self) -> tuple[list[Outcome], list[Item]]:
        """Check the transactions in flight: (final outcomes, trades to send again)."""
        if not self.in_flight:
            return [], []
        mined_below = self.read("Reading the bridge account's nonce",
                                lambda: self.w3.eth.get_transaction_count(self.address_of,
                                                                          "latest"))
        ordered = sorted(self.in_flight.values(), key=lambda t: t.nonce)
        receipts = self._receipts(self._hashes_to_check(ordered, mined_below))
        finished: list[Outcome] = []
        orphaned: list[Item] = []
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

    @property
    def address_of(self) -> str:
        return self.sender.address

    def _hashes_to_check(self, ordered: Sequence[Transaction], mined_below: int) -> list[str]:
        """Receipts this poll needs: every version of a newly mined nonce, and those of
        receipts now deep enough to confirm."""
        hashes = []
        for tx in ordered:
            if tx.receipt is None and tx.nonce < mined_below:
                hashes.extend(attempt.tx_hash.to_0x_hex() for attempt in tx.attempts)
            elif tx.receipt is not None and self._deep_enough(tx.receipt):
                hashes.append(tx.receipt.tx_hash)
        return hashes

    def _found(self, tx: Transaction, receipts: dict[str, Receipt | None]) -> bool:
        """Take the receipt of any version of ``tx`` (newest first) if there is one."""
        for attempt in reversed(tx.attempts):
            receipt = receipts.get(attempt.tx_hash.to_0x_hex())
            if receipt is not None:
                tx.receipt = receipt
                self._observe(tx, receipt)
                return True
        return False

    def _receipts(self, hashes: Sequence[str]) -> dict[str, Receipt | None]:
        """Receipts by transaction hash (None: not mined, or not indexed yet), in one
        JSON-RPC batch: one round trip however many transactions are in flight."""
        if not hashes:
            return {}

        def fetch() -> dict[str, Receipt | None]:
            replies = self.w3.provider.make_batch_request(
                [("eth_getTransactionReceipt", [tx_hash]) for tx_hash in hashes])
            if not isinstance(replies, list):
                raise NodeRefused(f"Reading receipts failed: {replies}.", str(replies))
            by_id = {int(reply["id"]): reply for reply in replies}
            found: dict[str, Receipt | None] = {}
            for tx_hash, key in zip(hashes, sorted(by_id), strict=True):
                reply = by_id[key]
                if "error" in reply:
                    reason = reply["error"].get("message", str(reply["error"]))
                    raise NodeRefused(f"Reading a receipt failed: the node said: {reason}.",
                                      reason)
                raw = reply.get("result")
                found[tx_hash] = None if raw is None else Receipt.from_json(raw, self.address)
            return found
        return self.read("Reading receipts", fetch)

    def _observe(self, tx: Transaction, receipt: Receipt) -> None:
        """First sight of a receipt: latency of each trade, and what a trade really costs."""
        now_ms = time.time() * 1000
        for item in tx.items:
            self.metrics.latency(max(0.0, (now_ms - item.entered_ms) / 1000))
        if receipt.status == 1 and tx.items:
            observed = receipt.gas_used / len(tx.items)
            self.gas_per_trade = 0.7 * self.gas_per_trade + 0.3 * observed
            self.metrics.set(gas_per_trade=round(self.gas_per_trade))

    def _deep_enough(self, receipt: Receipt) -> bool:
        return self.head >= receipt.block_number + self.settings.confirmations

    def _final(self, tx: Transaction, receipts: dict[str, Receipt | None]) -> Outcome | None:
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

    def _orphan(self, tx: Transaction) -> list[Item]:
        """The nonce was used by a transaction not of this writer: send the trades again."""
        log.warning("Nonce %d of the bridge account was used by another transaction; "
                    "sending its %d trades again.", tx.nonce, len(tx.items))
        del self.in_flight[tx.nonce]
        return tx.items

    def _retry(self, tx: Transaction) -> None:
        """Send a version the node has not taken yet again (fresh fees if fees were why)."""
        if tx.refusal is not None and any(word in tx.refusal for word in FEE_REFUSALS):
            self._attempt(tx, self._fresh_fees())
        else:
            self._send(tx, tx.attempts[-1])

    def _unstick(self, tx: Transaction) -> None:
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
                return f"The node refuses the bridge's transactions: {tx.refusal}."
        return None

    def _update_gauges(self) -> None:
        self.metrics.set(in_flight_transactions=len(self.in_flight),
                         in_flight_trades=self.trades_in_flight())

    def trades_in_flight(self) -> int:
        return sum(len(tx.items) for tx in self.in_flight.values())

    def is_recorded(self, trade_ids: Sequence[uuid.UUID]) -> list[bool]:
        """``isRecorded`` of each trade id, in one JSON-RPC batch."""
        requests_ = [("eth_call", [{"to": self.address,
                                    "data": "0x" + (IS_RECORDED_SELECTOR
                                                    + uuid_to_bytes32(trade_id)).hex()},
                                   "latest"]) for trade_id in trade_ids]
        responses = self.w3.provider.make_batch_request(requests_)
        if not isinstance(responses, list):  # the node refused the batch as a whole
            raise NodeRefused(f"Asking Settlement which trades it has failed: {responses}.",
                              str(responses))
        answers: dict[int, bool] = {}
        for response in responses:
            if "error" in response:
                reason = response["error"].get("message", str(response["error"]))
                raise NodeRefused(f"Asking Settlement which trades it has failed: the node "
                                  f"said: {reason}.", reason)
            answers[int(response["id"])] = int(response["result"], 16) != 0
        # Replies may come in any order; ids were handed out in request order.
        return [answers[key] for key in sorted(answers)]

    # -- reverted batches ---------------------------------------------------------------

    def diagnose(self, items: Sequence[Item]) -> int | None:
        """Why a batch reverts now: the index of a trade the contract refuses, or None if it
        goes through (it ran short of gas or met other state). Fatal reasons raise."""
        data = self.selector + abi_encode([self.argument_type],
                                          [[item.record.as_contract_tuple() for item in items]])
        request = {"from": self.address_of, "to": self.address, "data": HexBytes(data)}
        try:
            self.read("Checking a reverted batch", lambda: self.w3.eth.call(request))
        except ContractLogicError as error:
            revert = _revert_bytes(error.data)
            if revert[:4] == INVALID_TRADE_SELECTOR:
                return int(abi_decode(["uint256"], revert[4:])[0])
            reason = describe_revert(self.contract.abi, revert)
            if "AccessControl" in reason:
                raise RecorderRoleMissing(
                    f"The Settlement contract at {self.address} refuses the bridge account "
                    f"{self.address_of} ({reason}); the operator must grant it RECORDER_ROLE."
                ) from None
            raise BatchReverted(
                f"A batch of {len(items)} trades reverts in Settlement at {self.address}: "
                f"{reason}. The trades stay unacknowledged in the stream."
            ) from None
        return None


def _record_trades_abi(abi: list[dict[str, Any]]) -> tuple[bytes, str]:
    """The selector and argument type of ``recordTrades`` from the contract's ABI."""
    for entry in abi:
        if entry.get("type") == "function" and entry.get("name") == "recordTrades":
            components = ",".join(c["type"] for c in entry["inputs"][0]["components"])
            argument = f"({components})[]"
            return function_signature_to_4byte_selector(f"recordTrades({argument})"), argument
    raise BatchReverted("The Settlement ABI has no recordTrades function; is it the right ABI?")


def _revert_bytes(data: Any) -> bytes:
    if isinstance(data, dict):  # some providers wrap it as {"data": ...}
        data = data.get("data")
    if isinstance(data, str):
        return bytes.fromhex(data.removeprefix("0x"))
    return bytes(data or b"")
