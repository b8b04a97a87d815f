"""Items waiting for a transaction, in arrival order, one per key.

A codec may join an item seen again while its first copy waits or is in flight (the bridge
does, by trade id: gsy-e's plug-in may deliver twice after a lost Redis reply) to that copy:
one slot in one batch, and every entry of it acknowledged together.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar


class Batchable(Protocol):
    """What the queue needs of an item: a key unique in the queue, and when it was queued."""

    @property
    def key(self) -> Hashable: ...
    @property
    def queued_at(self) -> float: ...


B = TypeVar("B", bound=Batchable)


class Batcher(Generic[B]):
    """The queue of items (the bridge's trades, the ingest's readings) not yet in a
    transaction."""

    def __init__(self, max_batch: int, linger: float, small_batch: int = 0,
                 heavy_queue: int = 0) -> None:
        self.max_batch = max_batch
        self.linger = linger
        # geth (1.13 eth/handler.go) pushes a transaction of at most 4 KiB to its peers at
        # once but only announces a bigger one, which a signer fetches after the tx
        # fetcher's 500 ms arrival timeout: often too late for the block it builds at the
        # next head. While the queue is short, batches stay that small (0: never).
        self.small_batch = min(small_batch, max_batch)
        self.heavy_queue = heavy_queue
        self._queue: OrderedDict[Hashable, B] = OrderedDict()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, item: B) -> None:
        """Queue an item whose key is not queued yet (the caller merges duplicates)."""
        self._queue[item.key] = item

    def requeue(self, items: list[B]) -> None:
        """Put items of a failed transaction back at the front, in their order."""
        for item in reversed(items):
            self._queue[item.key] = item
            self._queue.move_to_end(item.key, last=False)

    def batch_size(self) -> int:
        """Items per batch now: small while fewer than ``heavy_queue`` wait (light load:
        latency), ``max_batch`` once more do (heavy load: small batches would spend ~10%
        more gas per item on the per-transaction overhead, and those items wait in the
        queue for longer than an announcement takes anyway)."""
        if self.small_batch and len(self._queue) < self.heavy_queue:
            return self.small_batch
        return self.max_batch

    def ready(self, now: float | None = None) -> bool:
        """A full batch is waiting, or the oldest item has waited ``linger`` seconds."""
        if not self._queue:
            return False
        if len(self._queue) >= self.batch_size():
            return True
        oldest = next(iter(self._queue.values()))
        return (now if now is not None else time.monotonic()) - oldest.queued_at >= self.linger

    def take(self, limit: int) -> list[B]:
        """The oldest ``limit`` items (at most a full batch), removed from the queue."""
        count = min(limit, self.batch_size(), len(self._queue))
        return [self._queue.popitem(last=False)[1] for _ in range(count)]
