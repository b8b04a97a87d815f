"""Trades waiting for a transaction, in arrival order, one per trade id.

The pipeline joins a trade id seen again while its first copy waits or is in flight (gsy-e's
plug-in may deliver twice after a lost Redis reply) to that copy: one slot in one batch, and
every entry of it acknowledged together.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from pilotchain.trades import TradeRecord


@dataclass(slots=True)
class Item:
    """One trade to record and the stream entries that carry it."""

    record: TradeRecord
    entry_ids: list[str]
    entered_ms: int
    queued_at: float = field(default_factory=time.monotonic)


class Batcher:
    """The queue of trades not yet in a transaction."""

    def __init__(self, max_batch: int, linger: float) -> None:
        self.max_batch = max_batch
        self.linger = linger
        self._queue: OrderedDict[uuid.UUID, Item] = OrderedDict()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, item: Item) -> None:
        """Queue a trade whose id is not queued yet (the caller merges duplicates)."""
        self._queue[item.record.trade_id] = item

    def requeue(self, items: list[Item]) -> None:
        """Put trades of a failed transaction back at the front, in their order."""
        for item in reversed(items):
            self._queue[item.record.trade_id] = item
            self._queue.move_to_end(item.record.trade_id, last=False)

    def ready(self, now: float | None = None) -> bool:
        """A full batch is waiting, or the oldest trade has waited ``linger`` seconds."""
        if not self._queue:
            return False
        if len(self._queue) >= self.max_batch:
            return True
        oldest = next(iter(self._queue.values()))
        return (now if now is not None else time.monotonic()) - oldest.queued_at >= self.linger

    def take(self, limit: int) -> list[Item]:
        """The oldest ``limit`` trades (at most a full batch), removed from the queue."""
        count = min(limit, self.max_batch, len(self._queue))
        return [self._queue.popitem(last=False)[1] for _ in range(count)]
