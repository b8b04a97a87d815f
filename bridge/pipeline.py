"""The bridge: trades from the Redis Stream, batches to Settlement, acks after receipts.

The stream-to-chain loop is the worker's (:mod:`worker.loop`); this module is what makes it
the bridge: :class:`TradeCodec` says what an entry's trade is, how a batch of trades becomes
``recordTrades`` calldata, what a trade costs in gas and what the contract did with them.

Exactly once, end to end
------------------------
1. **Durable before acknowledged.** gsy-e's plug-in appends each trade to the stream (Redis
   with its append-only file). The bridge reads through a consumer group, so an entry it
   has read stays in the group's pending list until the bridge acknowledges it (XACK).
2. **Acknowledged only after the chain has it.** An entry is acknowledged only when the
   receipt of the transaction carrying its trade is ``BRIDGE_CONFIRMATIONS`` blocks deep and
   still canonical, or when it is moved to the dead-letter stream (XACK and, if that
   acknowledged it, XADD in one script: a rejected entry is neither lost, nor read again,
   nor dead-lettered twice). A crash between receipt and acknowledgement leaves the
   entry pending: nothing is lost, and step 3 avoids a repeat.
   A read whose reply Redis lost on its way down leaves entries pending for this bridge
   that it never saw; after each Redis outage (and every few seconds by count) the bridge
   reads its own pending list and settles what it does not hold.
3. **Re-checked on restart.** A new bridge first waits (up to ``BRIDGE_RECOVERY_TIMEOUT``)
   until the transactions its predecessor left in the pool are mined, then claims every
   pending entry of the group (XAUTOCLAIM) and asks the contract ``isRecorded`` for each
   trade: recorded ones are acknowledged, the others are sent again.
4. **Keyed by trade id.** Copies of one trade id that meet in the bridge (the plug-in may
   deliver twice after a lost reply) share one slot in one batch; the contract skips an id
   it already has (``BatchRecorded`` counts it as skipped), the last line of defence
   should a trade still be sent twice (e.g. a transaction mined after the recovery check).
5. **One writer.** A Redis lock (renewed, with a time to live) keeps a second bridge from
   sending for the same stream; a start-up guard refuses a stream that was settled into
   another chain or contract before.

Redis and the RPC node may go away at any time: each side retries with bounded exponential
backoff while the other keeps working (acknowledgements wait in memory for Redis; in-flight
transactions wait in the node's pool for the chain).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from bridge.config import BridgeSettings
from bridge.diagnosis import refused_trade
from bridge.events import ValidTrade, decode_entry
from bridge.gas import TRADE_GAS
from bridge.recorded import is_recorded
from pilotchain.errors import ChainError
from pilotchain.events import BATCH_RECORDED, decode_as, event_of
from pilotchain.settlement import SettlementABI
from pilotchain.trades import TradeRecord
from worker.codec import ChainLink, Delivery, Desk, Profile
from worker.entries import Entry, Rejected, entry_time_ms
from worker.gas import ItemGas
from worker.loop import Worker
from worker.metrics import Metrics
from worker.receipts import Receipt
from worker.writer import Outcome

IS_RECORDED_CHUNK = 200
log = logging.getLogger("bridge")


@dataclass(slots=True)
class TradeItem:
    """One trade to record and the stream entries that carry it."""

    record: TradeRecord
    entry_ids: list[str]
    entered_ms: int
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> uuid.UUID:
        return self.record.trade_id


def batch_counts(receipt: Receipt, items: int) -> tuple[int, int]:
    """(recorded, skipped) from the contract's BatchRecorded event (all recorded if the
    event is missing)."""
    for entry in receipt.logs:
        if event_of(entry) is BATCH_RECORDED:
            batch = decode_as(BATCH_RECORDED, entry).values
            return batch["recorded"], batch["skipped"]
    return items, 0


class TradeCodec:
    """What the worker needs to know of trades (keyed by trade id)."""

    item_gas: ItemGas = TRADE_GAS

    def __init__(self, settings: BridgeSettings) -> None:
        self.profile = Profile(
            service="bridge", role="RECORDER_ROLE", min_partial_batch=50,
            small_batch=settings.small_batch, heavy_queue=settings.heavy_queue,
            redis_hint=" (set by REDIS_URL, or REDIS_HOST and REDIS_PORT)")
        self.abi: SettlementABI | None = None
        self._chain: ChainLink | None = None

    def connected(self, chain: ChainLink) -> None:
        abi = SettlementABI(chain.contract.abi)
        # Refuse an ABI without recordTrades now rather than at the first batch.
        abi.function("recordTrades")
        self.abi = abi
        self._chain = chain

    def calldata(self, items: Sequence[TradeItem]) -> bytes:
        assert self.abi is not None, "the worker sends only once connected"
        return self.abi.record_trades([item.record for item in items])

    def entry_ids(self, item: TradeItem) -> Sequence[str]:
        return item.entry_ids

    def waiting(self) -> Sequence[str]:
        return ()

    def before_poll(self, desk: Desk[TradeItem]) -> None:
        """Nothing waits for the chain outside the queue."""

    # -- recovery ---------------------------------------------------------------------

    def take(self, entries: Sequence[Entry], delivery: Delivery,
             desk: Desk[TradeItem]) -> None:
        if delivery is Delivery.NEW:
            for item in self._decode_all(entries, desk):
                self._enqueue(item, desk)
        elif delivery is Delivery.RECOVERED:
            self._settle_unacknowledged(entries, self._recorded, desk)
        else:
            self._settle_unacknowledged(
                entries, lambda ids: self._recorded_if_reachable(ids, desk), desk)

    def recovered(self, count: int, took: float, waited: float,
                  desk: Desk[TradeItem]) -> str:
        return (f"Recovered {count} unacknowledged entries in {took:.1f} s ({waited:.1f} s "
                f"waiting for the previous run's transactions): "
                f"{desk.metrics.get('already_recorded')} already on chain, "
                f"{desk.queued()} to send.")

    def _settle_unacknowledged(
            self, entries: Sequence[Entry],
            recorded_of: Callable[[Iterable[uuid.UUID]], set[uuid.UUID]],
            desk: Desk[TradeItem]) -> None:
        """Acknowledge the entries whose trade the contract has; queue the others."""
        valid = self._decode_all(entries, desk)
        recorded = recorded_of(item.record.trade_id for item in valid)
        for item in valid:
            if item.record.trade_id in recorded:
                desk.ack(item.entry_ids)
                desk.metrics.add("settled")
                desk.metrics.add("already_recorded")
            else:
                self._enqueue(item, desk)

    def _recorded_if_reachable(self, trade_ids: Iterable[uuid.UUID],
                               desk: Desk[TradeItem]) -> set[uuid.UUID]:
        """``_recorded``, or none while the chain is away: the contract skips a trade sent
        twice, so queueing a recorded one costs gas, never a duplicate."""
        if not desk.chain_ok:
            return set()
        try:
            return self._recorded(trade_ids)
        except ChainError as error:
            desk.chain_down(error)
            return set()

    def _recorded(self, trade_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """Which of ``trade_ids`` the contract has recorded (batches of raw eth_calls:
        web3's contract layer costs ten times the node's own time per call here)."""
        chain = self._link()
        ids = list(trade_ids)
        found: set[uuid.UUID] = set()
        for start in range(0, len(ids), IS_RECORDED_CHUNK):
            chunk = ids[start:start + IS_RECORDED_CHUNK]
            answers = is_recorded(chain.w3, chain.url, chain.contract, chunk)
            found.update(trade_id for trade_id, yes in zip(chunk, answers, strict=True) if yes)
        return found

    def _link(self) -> ChainLink:
        assert self._chain is not None, "the worker hands entries over only once connected"
        return self._chain

    # -- entries in, acknowledgements out ---------------------------------------------

    def _decode_all(self, entries: Sequence[Entry], desk: Desk[TradeItem]) -> list[TradeItem]:
        """Validate entries: rejects to the dead-letter queue, the rest as items."""
        items = []
        for entry_id, fields in entries:
            decoded = decode_entry(entry_id, fields)
            if isinstance(decoded, Rejected):
                desk.reject(decoded)
                continue
            items.append(_item(decoded))
        return items

    def _enqueue(self, item: TradeItem, desk: Desk[TradeItem]) -> None:
        """Queue a trade, or join it to the copy already queued or in flight."""
        existing = desk.open_item(item.key)
        if existing is not None:
            # A retried recovery claims entries it already holds: those are no duplicates.
            new = [entry_id for entry_id in item.entry_ids if entry_id not in existing.entry_ids]
            existing.entry_ids.extend(new)
            desk.metrics.add("duplicates", len(new))
            return
        desk.queue(item)

    def mined(self, outcome: Outcome[TradeItem], desk: Desk[TradeItem]) -> None:
        """Acknowledge the trades of a mined batch."""
        items = outcome.transaction.items
        recorded, skipped = batch_counts(outcome.receipt, len(items))
        for item in items:
            desk.ack(item.entry_ids)
            desk.close(item)
        desk.metrics.add("settled", len(items))
        desk.metrics.add("recorded", recorded)
        desk.metrics.add("already_recorded", skipped)

    def reverted(self, items: list[TradeItem], desk: Desk[TradeItem]) -> None:
        """A batch reverted: dead-letter the trade the contract refuses, send the rest."""
        chain = self._link()
        index = refused_trade(chain.w3, chain.url, chain.contract, chain.sender_address,
                              [item.record for item in items])
        if index is not None and 0 <= index < len(items):
            bad = items.pop(index)
            desk.close(bad)
            reason = (f"Trade {bad.record.trade_id} cannot be recorded: the Settlement "
                      f"contract refuses it (InvalidTrade).")
            for entry_id in bad.entry_ids:
                desk.reject(Rejected(entry_id, reason, ""))
        log.warning("A batch reverted; sending its other %d trades again.", len(items))
        desk.requeue(items)


def _item(valid: ValidTrade) -> TradeItem:
    return TradeItem(valid.record, [valid.entry_id], entry_time_ms(valid.entry_id))


class Bridge:
    """One bridge process's work; ``run`` returns when ``stop`` is set."""

    def __init__(self, settings: BridgeSettings, metrics: Metrics | None = None,
                 stop: threading.Event | None = None) -> None:
        self.worker = Worker(settings, TradeCodec(settings), metrics, stop)

    def run(self) -> None:
        self.worker.run()
