"""What a service hands the stream-to-chain loop, and what the loop hands back.

A service composes the loop (:class:`worker.loop.Worker`) with a :class:`Codec` of its own:
who it is (:class:`Profile`), what an entry becomes, the calldata of a batch, what an item may
cost in gas and what a mined or reverted batch means for its items. The codec acts on the loop
only through the :class:`Desk` it is handed, and reads the chain through a :class:`ChainLink`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, TypeVar

from eth_typing import ChecksumAddress
from web3 import Web3

from pilotchain.chain import read as chain_read
from pilotchain.contract import Deployment
from pilotchain.errors import ChainError
from worker.batching import Batchable
from worker.entries import Entry, Rejected
from worker.metrics import Family, Metrics
from worker.writer import BatchCodec, Outcome, Queued

T = TypeVar("T")
I = TypeVar("I", bound="LoopItem")  # noqa: E741


class LoopItem(Batchable, Queued, Protocol):
    """What the loop needs of an item: the queue's key and times, the writer's latency."""


@dataclass(frozen=True)
class Profile:
    """Who the loop works for.

    ``service`` names the lock, the guard, the logger and the messages (``bridge``); ``role``
    is the Settlement role the account must hold (``RECORDER_ROLE``). Below
    ``min_partial_batch`` items of room in the current block the loop waits for the next
    block's budget instead of sending a sliver (every transaction costs ~33k gas on top of its
    items). ``small_batch`` and ``heavy_queue``: the batch size while the queue is short, and
    the queue length from which batches are full (0, 0: always full). ``redis_hint`` says
    where the Redis address is set, while waiting for it. ``metrics``: what the service
    measures beyond the worker's own (worker.metrics.STREAM_WORKER).
    """

    service: str
    role: str
    min_partial_batch: int
    small_batch: int = 0
    heavy_queue: int = 0
    redis_hint: str = ""
    metrics: tuple[Family, ...] = ()


class Delivery(Enum):
    """How entries reached the loop, which decides what a repeat of them means."""

    NEW = "new"  # read for the first time
    RECOVERED = "recovered"  # a previous run read them and left them unacknowledged
    LOST = "lost"  # delivered to this consumer, but the reply carrying them was lost


@dataclass(frozen=True)
class ChainLink:
    """The chain as a codec may read it: the node, the contract and the loop's account."""

    w3: Web3
    url: str
    contract: Any
    chain_id: int
    sender_address: ChecksumAddress
    deployment: Deployment

    @property
    def contract_address(self) -> ChecksumAddress:
        address: ChecksumAddress = self.contract.address
        return address

    def read(self, action: str, fn: Callable[[], T]) -> T:
        """A chain read with node failures turned into ChainError sentences."""
        return chain_read(self.url, action, fn)


class Desk(Protocol[I]):
    """What a codec may do to the loop: queue, settle and requeue items, acknowledge and
    dead-letter entries, read the chain or report it down. The loop's own state stays its
    own (worker.loop implements this)."""

    @property
    def metrics(self) -> Metrics: ...

    @property
    def chain(self) -> ChainLink:
        """The chain, once connected (a codec is handed entries only after that)."""
        ...

    @property
    def chain_ok(self) -> bool:
        """False while the chain is known to be down (reads would only wait)."""
        ...

    def chain_down(self, error: ChainError) -> None:
        """A chain read of the codec's failed: back off as if the loop's own had."""

    def open_item(self, key: Hashable) -> I | None:
        """The item queued or in flight under ``key``, if any."""

    def queue(self, item: I) -> None:
        """Hold ``item`` until it is settled, and batch it."""

    def close(self, item: I) -> None:
        """``item`` is settled or given up: no longer held."""

    def queued(self) -> int:
        """How many items wait for a batch."""

    def requeue(self, items: list[I]) -> None:
        """Send held items again, first."""

    def ack(self, entry_ids: Iterable[str]) -> None:
        """Acknowledge entries (written at the next flush)."""

    def reject(self, rejected: Rejected) -> None:
        """Dead-letter an entry with its reason (written at the next flush)."""

    def file(self, kept: Rejected, stream: str, maxlen: int, counter: str) -> None:
        """Move an entry to ``stream`` with a note instead of the chain (the ingest's minute
        readings), keeping about ``maxlen``; counted as ``counter``."""


class Codec(BatchCodec[I], Protocol[I]):
    """What a service hands the loop: everything about its items, nothing about the loop."""

    @property
    def profile(self) -> Profile: ...

    def connected(self, chain: ChainLink) -> None:
        """The chain answers and the contract is there: read what the codec needs from it
        (the ABI, the slot length), or raise the service's own error if it cannot work."""

    def entry_ids(self, item: I) -> Sequence[str]:
        """The stream entries an open item stands for."""

    def waiting(self) -> Sequence[str]:
        """Entries the codec holds outside the queue (read, not yet queued): they count
        against ``max_queued`` and are not taken for lost."""

    def take(self, entries: Sequence[Entry], delivery: Delivery, desk: Desk[I]) -> None:
        """Decode entries: queue their items, acknowledge or dead-letter the rest."""

    def before_poll(self, desk: Desk[I]) -> None:
        """Chain work that comes before the head is read (a ChainError stops the poll)."""

    def mined(self, outcome: Outcome[I], desk: Desk[I]) -> None:
        """Settle the items of a batch that was mined: acknowledge, dead-letter or requeue
        each (the receipt's logs say what the contract did)."""

    def reverted(self, items: list[I], desk: Desk[I]) -> None:
        """A batch reverted: dead-letter what cannot go, requeue the rest."""

    def recovered(self, count: int, took: float, waited: float, desk: Desk[I]) -> str:
        """The log line that says what recovery found."""


