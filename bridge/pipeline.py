"""The bridge's loop: trades from the Redis Stream, batches to Settlement, acks after receipts.

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
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bridge.batching import Item
from bridge.config import BridgeSettings
from bridge.diagnosis import refused_trade
from bridge.errors import BridgeConfigError, RecorderRoleMissing
from bridge.events import Rejected, ValidTrade, decode_entry, entry_time_ms
from bridge.loop import StreamLoop
from bridge.recorded import is_recorded
from bridge.stream import Entry
from bridge.writer import BatchCodec, Outcome, TradeCodec
from pilotchain.errors import ChainError

IS_RECORDED_CHUNK = 200


class Bridge(StreamLoop[BridgeSettings, uuid.UUID, Item]):
    """One bridge process's work (keyed by trade id); ``run`` returns when ``stop`` is set."""

    service = "bridge"
    log = logging.getLogger("bridge")
    config_error = BridgeConfigError
    role = "RECORDER_ROLE"
    role_missing = RecorderRoleMissing
    min_partial_batch = 50
    redis_hint = " (set by REDIS_URL, or REDIS_HOST and REDIS_PORT)"
    resend_note = "the contract skips any trade recorded twice"

    def _small_batches(self) -> tuple[int, int]:
        return self.settings.small_batch, self.settings.heavy_queue

    def _codec(self, abi: Any) -> BatchCodec[Item]:
        return TradeCodec(abi)

    def _entry_ids(self, item: Item) -> Sequence[str]:
        return item.entry_ids

    # -- recovery ---------------------------------------------------------------------

    def _take_over(self, entries: Sequence[Entry]) -> None:
        self._settle_unacknowledged(entries, self._recorded)

    def _take_lost(self, entries: Sequence[Entry]) -> None:
        self._settle_unacknowledged(entries, self._recorded_if_reachable)

    def _log_recovery(self, recovered: int, took: float, waited: float) -> None:
        self.log.info("Recovered %d unacknowledged entries in %.1f s (%.1f s waiting for the "
                      "previous run's transactions): %d already on chain, %d to send.",
                      recovered, took, waited, self.metrics.get("already_recorded"),
                      len(self.batcher))

    def _settle_unacknowledged(
            self, entries: Sequence[Entry],
            recorded_of: Callable[[Iterable[uuid.UUID]], set[uuid.UUID]]) -> None:
        """Acknowledge the entries whose trade the contract has; queue the others."""
        valid = self._decode_all(entries)
        recorded = recorded_of(item.record.trade_id for item in valid)
        for item in valid:
            if item.record.trade_id in recorded:
                self._acks.extend(item.entry_ids)
                self.metrics.add("settled")
                self.metrics.add("already_recorded")
            else:
                self._enqueue(item)

    def _recorded_if_reachable(self, trade_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """``_recorded``, or none while the chain is away: the contract skips a trade sent
        twice, so queueing a recorded one costs gas, never a duplicate."""
        if self._chain_problem is not None:
            return set()
        try:
            return self._recorded(trade_ids)
        except ChainError as error:
            self._chain_down(error)
            return set()

    def _recorded(self, trade_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """Which of ``trade_ids`` the contract has recorded (batches of raw eth_calls:
        web3's contract layer costs ten times the node's own time per call here)."""
        ids = list(trade_ids)
        found: set[uuid.UUID] = set()
        for start in range(0, len(ids), IS_RECORDED_CHUNK):
            chunk = ids[start:start + IS_RECORDED_CHUNK]
            answers = is_recorded(self.writer.w3, self.writer.url, self.writer.contract,
                                  chunk)
            found.update(trade_id for trade_id, yes in zip(chunk, answers, strict=True) if yes)
        return found

    # -- entries in, acknowledgements out ---------------------------------------------

    def _take_new(self, entries: Sequence[Entry]) -> None:
        self._decode_all(entries, enqueue=True)

    def _decode_all(self, entries: Sequence[Entry], *, enqueue: bool = False) -> list[Item]:
        """Validate entries: rejects to the dead-letter queue, the rest as items."""
        items = []
        for entry_id, fields in entries:
            decoded = decode_entry(entry_id, fields)
            if isinstance(decoded, Rejected):
                self._reject(decoded)
                continue
            item = _item(decoded)
            if enqueue:
                self._enqueue(item)
            else:
                items.append(item)
        return items

    def _enqueue(self, item: Item) -> None:
        """Queue a trade, or join it to the copy already queued or in flight."""
        existing = self._open.get(item.record.trade_id)
        if existing is not None:
            # A retried recovery claims entries it already holds: those are no duplicates.
            new = [entry_id for entry_id in item.entry_ids if entry_id not in existing.entry_ids]
            existing.entry_ids.extend(new)
            self.metrics.add("duplicates", len(new))
            return
        self._open[item.record.trade_id] = item
        self.batcher.add(item)

    def _mined(self, outcome: Outcome[Item]) -> None:
        """Acknowledge the trades of a mined batch."""
        items = outcome.transaction.items
        recorded, skipped = outcome.counts()
        for item in items:
            self._acks.extend(item.entry_ids)
            self._open.pop(item.record.trade_id, None)
        self.metrics.add("settled", len(items))
        self.metrics.add("recorded", recorded)
        self.metrics.add("already_recorded", skipped)

    def _reverted(self, items: list[Item]) -> None:
        """A batch reverted: dead-letter the trade the contract refuses, send the rest."""
        writer = self.writer
        index = refused_trade(writer.w3, writer.url, writer.contract, writer.sender_address,
                              [item.record for item in items])
        if index is not None and 0 <= index < len(items):
            bad = items.pop(index)
            self._open.pop(bad.record.trade_id, None)
            reason = (f"Trade {bad.record.trade_id} cannot be recorded: the Settlement "
                      f"contract refuses it (InvalidTrade).")
            self._dead.extend(Rejected(entry_id, reason, "") for entry_id in bad.entry_ids)
        self.log.warning("A batch reverted; sending its other %d trades again.", len(items))
        self.batcher.requeue(items)


def _item(valid: ValidTrade) -> Item:
    return Item(valid.record, [valid.entry_id], entry_time_ms(valid.entry_id))
