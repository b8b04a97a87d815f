"""Closing due slots: what ``pilotchain slots close`` does once and ``pilotchain-closer``
does every ``CLOSER_INTERVAL`` seconds.

The contract balances a slot of a metered participant only when someone calls
``closeSlots`` after its deadline (``slot + slotSeconds + closeDelay``). The closer learns
from the contract's events which participants are metered and from when: its meters
(``MeterRegistered``/``MeterDeactivated``), its readings (``ReadingRecorded``), its trades
across the meter (``TradeSettled``) and the slots already closed (``SlotBalanced``/
``SlotUnmetered``). It keeps that knowledge between passes and reads only new blocks.

A participant's slots run from the earliest of: its first meter's start (a participant's
first meter is active from time 0, so for it, the slot its registration was mined in), its
earliest reading, its earliest trade across the meter; up to the newest due slot, or to the
end of its last meter once it has none active. Slots ``slotOf`` reports closed are skipped;
the rest are closed in batches that fit half a block's gas. Closing is idempotent on chain,
so a closer that restarts, or runs beside another, closes no slot twice.

A reorganisation can put an event into a block the closer has read already (an out-of-turn
block without a transaction, replaced by the in-turn one with it): every pass reads the last
``REREAD_BLOCKS`` blocks again and learns the events it has not seen in that very block.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial

from hexbytes import HexBytes
from web3.exceptions import ContractLogicError
from web3.types import LogReceipt, TxReceipt

from pilotchain.chain import Sender, call, wait_for_receipt
from pilotchain.contract import revert_data
from pilotchain.events import (
    METER_DEACTIVATED,
    METER_REGISTERED,
    READING_RECORDED,
    SLOT_BALANCED,
    SLOT_UNMETERED,
    TRADE_SETTLED,
    decode_as,
    decode_log,
    event_of,
)
from pilotchain.metering import SlotStatus
from pilotchain.operator import (
    ACTIVE,
    OperatorError,
    SettlementClient,
    format_time,
    refusal,
)

TOPICS = tuple(event.topic for event in (METER_REGISTERED, METER_DEACTIVATED, READING_RECORDED,
                                          TRADE_SETTLED, SLOT_BALANCED, SLOT_UNMETERED))
# Gas one closed slot may take at most: a balanced one with a charge costs about 52,000, and
# the first change of a bill in a new period stores a snapshot for it and for the operator.
GAS_PER_SLOT = 120_000
# closeSlots calldata: two array words per slot; geth refuses transactions over 128 KiB.
MAX_SLOTS_PER_TRANSACTION = 1_500
# Slots looked at per pass, so a participant with a long history is caught up over passes.
MAX_CANDIDATES = 20_000
# Blocks read again at every pass, for events a reorganisation moved into them (Clique's are
# a block or two deep; the portal keeps 64 hashes for deeper ones).
REREAD_BLOCKS = 16

log = logging.getLogger(__name__)


@dataclass
class Participant:
    """What the events say about one metered participant's slots."""

    home_area: bytes
    start: int | None = None  # the earliest time a slot of it can matter
    active_until: int = ACTIVE  # the end of its newest meter
    open_from: int | None = None  # every slot before this is known to be closed
    closed: set[int] = field(default_factory=set)  # closed slots from open_from on

    def earliest(self, seconds: int, slot_seconds: int) -> None:
        """A slot from ``seconds`` on may need closing."""
        slot = seconds // slot_seconds * slot_seconds
        if self.start is None or slot < self.start:
            self.start = slot
        if self.open_from is None or slot < self.open_from:
            self.open_from = slot

    def mark_closed(self, slot: int, slot_seconds: int) -> None:
        if self.open_from is None or slot < self.open_from:
            return
        self.closed.add(slot)
        while self.open_from in self.closed:
            self.closed.discard(self.open_from)
            self.open_from += slot_seconds


@dataclass(frozen=True)
class PassResult:
    """What one pass closed, and what it left for the next."""

    balanced: int = 0
    unmetered: int = 0
    transactions: int = 0
    remaining: int = 0  # open due slots beyond this pass's limit

    @property
    def closed(self) -> int:
        return self.balanced + self.unmetered

    def __add__(self, other: PassResult) -> PassResult:
        return PassResult(self.balanced + other.balanced, self.unmetered + other.unmetered,
                          self.transactions + other.transactions, other.remaining)


class SlotCloser:
    """Closes every due, still-open slot of every metered participant, sending with
    ``sender``; keeps what it learnt from the events between passes."""

    def __init__(self, client: SettlementClient, sender: Sender, *,
                 max_batch: int | None = None, max_candidates: int = MAX_CANDIDATES,
                 stop: threading.Event | None = None) -> None:
        self.client = client
        self.sender = sender
        # Set when the service stops: no batch is sent after it, and the one sent is not
        # awaited (its outcome is read from the chain at the next start).
        self.stop = stop
        self.max_batch = max_batch
        self.max_candidates = max_candidates
        self.participants: dict[bytes, Participant] = {}
        self.meters: dict[bytes, bytes] = {}  # meter -> participant
        self.cursor = client.deployment.block_number - 1  # the newest block read
        # The events of the last REREAD_BLOCKS blocks learnt: (block hash, log index) -> block.
        self._seen: dict[tuple[bytes, int], int] = {}

    def close_all(self, until: int | None = None) -> PassResult:
        """Passes until no due slot is left open."""
        total = self.close_due(until)
        while total.remaining:
            total = total + self.close_due(until)
        return total

    def close_due(self, until: int | None = None) -> PassResult:
        """One pass: read new events, then close the due open slots (those ending by
        ``until`` if given), up to ``max_candidates`` of them."""
        client = self.client
        head = call(client.url, "Reading the head", lambda: client.w3.eth.get_block("latest"))
        if not self.participants:
            # Until the first meter is registered the operator may still change the slot
            # length; from then on the contract keeps it.
            client.forget_slot_seconds()
        slot_seconds = client.slot_seconds()
        since = max(self.cursor + 1 - REREAD_BLOCKS, 0)
        self._learn(self._unseen(client.logs(TOPICS, since, head["number"]), since),
                    slot_seconds)
        self.cursor = head["number"]
        delay = client.view(client.abi.close_delay())
        newest = head["timestamp"] - slot_seconds - delay  # the newest due slot starts by then
        if until is not None:
            newest = min(newest, until - slot_seconds)
        candidates, remaining = self._candidates(newest, slot_seconds)
        if not candidates:
            return PassResult(remaining=remaining)
        slots = client.read_all([client.abi.slot_of(participant, slot)
                                 for participant, slot in candidates])
        due = []
        for (participant, slot), record in zip(candidates, slots, strict=True):
            if record.status == SlotStatus.OPEN:
                due.append((participant, slot))
            else:
                self.participants[participant].mark_closed(slot, slot_seconds)
        result = self._close(due, head["gasLimit"], slot_seconds)
        return PassResult(result.balanced, result.unmetered, result.transactions, remaining)

    def _unseen(self, logs: Iterable[LogReceipt], since: int) -> list[LogReceipt]:
        """The logs not learnt before in the block that holds them now, in chain order; what
        was learnt of blocks before ``since`` is forgotten."""
        self._seen = {key: block for key, block in self._seen.items() if block >= since}
        unseen = []
        for entry in logs:
            key = (bytes(entry["blockHash"]), int(entry["logIndex"]))
            if key not in self._seen:
                self._seen[key] = int(entry["blockNumber"])
                unseen.append(entry)
        return unseen

    def _learn(self, logs: Iterable[LogReceipt], slot_seconds: int) -> None:
        """Update what is known from new events, in chain order."""
        registered_in: dict[bytes, int] = {}
        for entry in logs:
            decoded = decode_log(entry)
            if decoded is None:  # not one of the contract's events; the query asks for TOPICS
                continue
            event, v = decoded.event, decoded.values
            if event is METER_REGISTERED:
                self.meters[v["meter"]] = v["participant"]
                participant = self.participants.setdefault(v["participant"],
                                                           Participant(v["home_area"]))
                participant.active_until = ACTIVE
                if v["active_from"]:
                    participant.earliest(v["active_from"], slot_seconds)
                else:
                    registered_in[v["participant"]] = int(entry["blockNumber"])
            elif event is METER_DEACTIVATED:
                self.participants[v["participant"]].active_until = v["active_until"]
            elif event is READING_RECORDED:
                self.participants[self.meters[v["meter"]]].earliest(v["time"], slot_seconds)
            elif event is TRADE_SETTLED:
                for party in (v["seller"], v["buyer"]):
                    metered = self.participants.get(party)
                    if metered is not None and v["market"] != metered.home_area:
                        metered.earliest(v["time_slot"], slot_seconds)
            elif event is SLOT_BALANCED or event is SLOT_UNMETERED:
                self.participants[v["participant"]].mark_closed(v["slot"], slot_seconds)
        for pid, block in registered_in.items():
            mined = call(self.client.url, "Reading a block's time",
                         partial(self.client.w3.eth.get_block, block))
            self.participants[pid].earliest(mined["timestamp"], slot_seconds)

    def _candidates(self, newest: int, slot_seconds: int
                    ) -> tuple[list[tuple[bytes, int]], int]:
        """Slots not known to be closed, up to ``newest``; and about how many were left out
        (slots beyond ``max_candidates``, counted without looking at them)."""
        found: list[tuple[bytes, int]] = []
        left_out = 0
        for pid, participant in self.participants.items():
            if participant.open_from is None:
                continue
            last = newest
            if participant.active_until != ACTIVE:
                last = min(last, participant.active_until - slot_seconds)
            slot = participant.open_from
            while slot <= last:
                if len(found) == self.max_candidates:
                    left_out += (last - slot) // slot_seconds + 1
                    break
                if slot not in participant.closed:
                    found.append((pid, slot))
                slot += slot_seconds
        return found, left_out

    def _close(self, due: list[tuple[bytes, int]], gas_limit: int, slot_seconds: int
               ) -> PassResult:
        """Close ``due`` in batches of half a block's gas; count the outcomes."""
        size = min(MAX_SLOTS_PER_TRANSACTION, max(1, gas_limit // 2 // GAS_PER_SLOT))
        if self.max_batch:
            size = min(size, self.max_batch)
        balanced = unmetered = transactions = 0
        for start in range(0, len(due), size):
            if self.stop is not None and self.stop.is_set():
                break
            batch = due[start:start + size]
            receipt = self._send([p for p, _ in batch], [s for _, s in batch])
            transactions += 1
            for entry in receipt["logs"]:
                event = event_of(entry)
                if event is SLOT_BALANCED or event is SLOT_UNMETERED:
                    closed = decode_as(event, entry).values
                    balanced += event is SLOT_BALANCED
                    unmetered += event is SLOT_UNMETERED
                    self._closed(closed["participant"], closed["slot"], slot_seconds)
        return PassResult(balanced, unmetered, transactions)

    def _closed(self, participant: bytes, slot: int, slot_seconds: int) -> None:
        self.participants[participant].mark_closed(slot, slot_seconds)

    def _send(self, participants: list[bytes], slots: list[int]) -> TxReceipt:
        client = self.client
        data = client.abi.close_slots(participants, slots)
        try:
            tx_hash = self.sender.send({"to": client.contract.address, "data": HexBytes(data)})
        except ContractLogicError as error:  # from the gas estimate
            reason = client.abi.decode_revert(revert_data(error))
            raise OperatorError(f"Closing {len(slots)} slots from "
                                f"{format_time(min(slots))} refused: {refusal(reason)}") from None
        receipt = wait_for_receipt(client.w3, tx_hash, timeout=120, stop=self.stop)
        if receipt["status"] != 1:
            raise OperatorError(f"Closing {len(slots)} slots failed: transaction "
                                f"{tx_hash.to_0x_hex()} reverted (gas used "
                                f"{receipt['gasUsed']}).")
        return receipt
