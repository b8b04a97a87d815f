"""One stream-to-chain loop: stream entries in, batches to Settlement, acks after receipts.

Every writing service (the bridge's trades, the ingest's readings) runs this loop: start-up
that waits for Redis and the node, the writer lock and the start-up guard, recovery of a
previous run's unacknowledged entries, the tick that reads, sends and polls, Redis and chain
outages with bounded exponential backoff, entries whose delivery a lost reply swallowed,
acknowledgement and dead-letter flushing, and the metrics report.

What differs between the services comes in as a codec (:class:`worker.codec.Codec`), by
composition: what an entry becomes, the calldata of a batch, what an item may cost in gas and
what a mined or reverted batch means for its items. The codec acts on the loop only through
the desk it is handed (queue an item, acknowledge, dead-letter, report the chain down), never
by reaching into the loop's state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Generic, Literal, Protocol, TypeVar

import redis
from eth_account.signers.local import LocalAccount

from pilotchain.chain import GWEI, ChainUnreachable, Sender, connect
from pilotchain.config import ChainSettings, masked_url
from pilotchain.contract import load_deployment, settlement_contract
from pilotchain.errors import ChainError
from pilotchain.keys import KeyStore
from pilotchain.settlement import SettlementABI, eth_call
from worker.batching import Batcher
from worker.codec import ChainLink, Codec, Delivery, Desk, LoopItem
from worker.entries import Rejected
from worker.errors import RoleMissing, WorkerConfigError
from worker.health import backlog_problem
from worker.metrics import STREAM_WORKER, Metrics
from worker.retry import Backoff, sentence
from worker.stream import TRANSIENT, StreamConsumer, WriterLock, connect_redis, out_of_memory
from worker.writer import ChainWriter, Outcome, WriterSettings

T = TypeVar("T")
I = TypeVar("I", bound=LoopItem)  # noqa: E741

READ_COUNT = 1000
READ_BLOCK_MS = 50
# How often the loop compares its own pending count in Redis with what it holds.
DELIVERY_CHECK_INTERVAL = 5.0
# How often settled entries are trimmed from the stream and the backlog measured for /health.
TRIM_INTERVAL = 2.0


class LoopSettings(WriterSettings, Protocol):
    """The settings the loop reads besides the writer's (every writing service has them)."""

    @property
    def chain(self) -> ChainSettings: ...
    @property
    def redis_url(self) -> str: ...
    @property
    def stream(self) -> str: ...
    @property
    def group(self) -> str: ...
    @property
    def consumer(self) -> str: ...
    @property
    def dead_letter_stream(self) -> str: ...
    @property
    def key_role(self) -> str: ...
    @property
    def linger(self) -> float: ...
    @property
    def max_queued(self) -> int: ...
    @property
    def recovery_timeout(self) -> float: ...
    @property
    def metrics_url(self) -> str: ...
    @property
    def log_interval(self) -> float: ...
    @property
    def backoff_max(self) -> float: ...
    @property
    def dead_letter_maxlen(self) -> int: ...
    @property
    def health_max_age(self) -> float: ...
    @property
    def health_max_backlog(self) -> int: ...


class StopRequested(Exception):
    """Stop was asked for while a start-up step was still waiting."""


class _Desk(Generic[I]):
    """The loop's side of a codec's :class:`worker.codec.Desk`."""

    def __init__(self, worker: Worker[I]) -> None:
        self._worker = worker

    @property
    def metrics(self) -> Metrics:
        return self._worker.metrics

    @property
    def chain(self) -> ChainLink:
        """The chain, once connected (a codec is handed entries only after that)."""
        return self._worker._link

    @property
    def chain_ok(self) -> bool:
        """False while the chain is known to be down (reads would only wait)."""
        return self._worker._chain_problem is None

    def chain_down(self, error: ChainError) -> None:
        """A chain read of the codec's failed: back off as if the loop's own had."""
        self._worker._chain_down(error)

    def open_item(self, key: Hashable) -> I | None:
        """The item queued or in flight under ``key``, if any."""
        return self._worker._open.get(key)

    def queue(self, item: I) -> None:
        """Hold ``item`` until it is settled, and batch it."""
        self._worker._open[item.key] = item
        self._worker.batcher.add(item)

    def close(self, item: I) -> None:
        """``item`` is settled or given up: no longer held."""
        self._worker._open.pop(item.key, None)

    def queued(self) -> int:
        """How many items wait for a batch."""
        return len(self._worker.batcher)

    def requeue(self, items: list[I]) -> None:
        """Send held items again, first."""
        self._worker.batcher.requeue(items)

    def ack(self, entry_ids: Iterable[str]) -> None:
        """Acknowledge entries (written at the next flush)."""
        self._worker._acks.extend(entry_ids)

    def reject(self, rejected: Rejected) -> None:
        """Dead-letter an entry with its reason (written at the next flush)."""
        self._worker._reject(rejected)

    def file(self, kept: Rejected, stream: str, maxlen: int, counter: str) -> None:
        """Move an entry to ``stream`` with a note instead of the chain (the ingest's minute
        readings), keeping about ``maxlen``; counted as ``counter``."""
        self._worker._filed.setdefault((stream, maxlen, counter), []).append(kept)


class Worker(Generic[I]):
    """One service process's stream-to-chain work; ``run`` returns when ``stop`` is set.

    The loop holds the items queued or in flight, keyed by what makes two copies one (a
    trade id for the bridge, an entry id for the ingest).
    """

    def __init__(self, settings: LoopSettings, codec: Codec[I], metrics: Metrics | None = None,
                 stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.codec = codec
        self.profile = codec.profile
        self.service = self.profile.service
        self.log = logging.getLogger(self.service)
        self.metrics = metrics or Metrics()
        self.metrics.declare(*STREAM_WORKER, *self.profile.metrics)
        self.stop = stop or threading.Event()
        self.batcher: Batcher[I] = Batcher(settings.max_batch, settings.linger,
                                           self.profile.small_batch, self.profile.heavy_queue)
        self.desk: Desk[I] = _Desk(self)
        self._open: dict[Hashable, I] = {}
        self._acks: list[str] = []
        self._filed: dict[tuple[str, int, str], list[Rejected]] = {}
        self._dead: list[Rejected] = []
        self._redis_backoff = Backoff(settings.backoff_max)
        self._chain_backoff = Backoff(settings.backoff_max)
        self._redis_retry_at = 0.0
        self._chain_retry_at = 0.0
        self._redis_problem: str | None = None
        self._chain_problem: str | None = None
        self._next_report = 0.0
        self._next_delivery_check = 0.0
        self._next_trim = 0.0
        self._backlog_problem: str | None = None

    # -- life cycle -------------------------------------------------------------------

    def run(self) -> None:
        """Connect, recover what a previous run left, then settle until stopped."""
        try:
            self._run()
        except StopRequested:
            self.log.info("Stopped before the %s was ready.", self.service)

    def _run(self) -> None:
        where = f"Redis at {masked_url(self.settings.redis_url)}{self.profile.redis_hint}"
        self.stream = self._until_ready(where, self._open_redis)
        self.writer = self._until_ready("the chain", self._open_chain)
        self.lock = WriterLock(self.stream.client, self.settings.stream, service=self.service)
        self._until_ready("Redis", lambda: self.lock.acquire(timeout=30.0))
        try:
            self._until_ready("Redis", lambda: self.stream.check_target(
                self.writer.sender.chain_id(), self.writer.contract_address))
            self._until_ready("the chain and Redis", self._recover)
            self.metrics.set(state="running")
            self.log.info("%s running: stream %s, group %s, Settlement %s, metrics %s.",
                          self.service.capitalize(), self.settings.stream, self.settings.group,
                          self.writer.contract_address, self.settings.metrics_url)
            while not self.stop.is_set():
                self._tick()
            self._last_flush()
        finally:
            self._release()

    def _last_flush(self) -> None:
        try:
            self._flush_redis()
        except TRANSIENT as error:
            # Stopping while Redis is away: what was not acknowledged is re-checked next start.
            self.log.warning("Stopped without writing the last acknowledgements (%s).", error)

    def _until_ready(self, what: str, step: Callable[[], T]) -> T:
        """Run a start-up step until Redis and the node answer; other errors propagate."""
        backoff = Backoff(self.settings.backoff_max)
        while True:
            try:
                return step()
            except (*TRANSIENT, ChainUnreachable, redis.ResponseError) as error:
                if isinstance(error, redis.ResponseError) and not out_of_memory(error):
                    raise
                delay = backoff.next()
                self.log.warning("Waiting for %s: %s (retrying in %.1f s)", what,
                                 sentence(error), delay)
                self.metrics.set(problem=f"Waiting for {what}: {sentence(error)}")
                if self.stop.wait(delay):
                    raise StopRequested from None

    def _release(self) -> None:
        lock = getattr(self, "lock", None)
        if lock is None:
            return
        try:
            lock.release()
        except TRANSIENT:
            pass  # it expires by itself

    # -- connecting -------------------------------------------------------------------

    def _open_redis(self) -> StreamConsumer:
        s = self.settings
        stream = StreamConsumer(connect_redis(s.redis_url), s.stream, s.group, s.consumer,
                                s.dead_letter_stream, service=self.service,
                                dead_letter_maxlen=s.dead_letter_maxlen)
        try:
            stream.ensure_group()
        except (redis.AuthenticationError, redis.ResponseError) as error:
            if out_of_memory(error):
                raise  # waited out by _until_ready: trimming settled entries frees memory
            # A wrong or missing password, or a Redis that only takes local clients: waiting
            # will not change it.
            raise WorkerConfigError(
                f"Redis at {masked_url(s.redis_url)} refused the {self.service} ({error}); "
                "check REDIS_URL, or REDIS_HOST, REDIS_PORT and REDIS_PASSWORD_FILE."
            ) from None
        self.metrics.set(redis="ok")
        return stream

    def _open_chain(self) -> ChainWriter[I]:
        """Connect, load the deployment and check it is live and lets the account write."""
        s = self.settings
        url = s.chain.rpc_url
        w3 = connect(url)
        deployment = load_deployment(s.chain.deployment_file)
        contract = settlement_contract(w3, deployment)
        account = KeyStore(s.chain.keys_dir).role(s.key_role).unlock()
        sender = Sender(w3, account, url=url, priority_fee=int(s.priority_fee_gwei * GWEI))
        writer = ChainWriter(w3, sender, contract, s, self.metrics, url, self.codec,
                             self.service)
        chain_id = sender.chain_id()
        if chain_id != deployment.chain_id:
            raise WorkerConfigError(
                f"The deployment record {s.chain.deployment_file} is for chain "
                f"{deployment.chain_id}, but the node at {url} serves chain {chain_id}."
            )
        if not writer.read("Looking up Settlement", lambda: w3.eth.get_code(contract.address)):
            raise WorkerConfigError(
                f"No contract at {contract.address} on the chain at {url}; deploy it with "
                "`pilotchain deploy` (./scripts/up does it) or fix DEPLOYMENT_FILE."
            )
        self._link = ChainLink(w3, url, contract, chain_id, sender.address, deployment)
        self.codec.connected(self._link)
        self._check_role(writer, contract, account)
        writer.refresh()
        self.metrics.set(chain="ok")
        return writer

    def _check_role(self, writer: ChainWriter[I], contract: Any, account: LocalAccount) -> None:
        abi, address, role_name = SettlementABI(contract.abi), contract.address, self.profile.role
        role = writer.read(f"Reading {role_name}",
                           lambda: eth_call(writer.w3, address, abi.role(role_name)))
        kind = role_name.removesuffix("_ROLE").lower()
        if not writer.read(f"Checking the {kind} role", lambda: eth_call(
                writer.w3, address, abi.has_role(role, account.address))):
            raise RoleMissing(
                f"The {self.service} account {account.address} does not hold {role_name} in "
                f"Settlement at {writer.contract_address}; the operator must grant it "
                f"(pilotchain deploy grants it to keys/{self.settings.key_role})."
            )

    # -- recovery ---------------------------------------------------------------------

    def _recover(self) -> None:
        """Settle what a previous run left: wait for its transactions, then take over every
        unacknowledged entry."""
        began = time.monotonic()
        self._wait_for_own_transactions()
        waited = time.monotonic() - began
        recovered = 0
        for page in self.stream.claim_unacknowledged():
            self.codec.take(page, Delivery.RECOVERED, self.desk)
            recovered += len(page)
            self._flush_redis()
        if recovered:
            self.log.info("%s", self.codec.recovered(recovered, time.monotonic() - began,
                                                     waited, self.desk))

    def _wait_for_own_transactions(self) -> None:
        w3, address = self.writer.w3, self.writer.sender_address

        def count(block: Literal["pending", "latest"]) -> int:
            return self.writer.read(f"Reading the {self.service} account's nonce",
                                    lambda: w3.eth.get_transaction_count(address, block))

        pending, mined = count("pending"), count("latest")
        if pending <= mined:
            return
        self.log.info("Waiting for %d transactions of a previous run to be mined.",
                      pending - mined)
        deadline = time.monotonic() + self.settings.recovery_timeout
        while count("latest") < pending:
            if time.monotonic() >= deadline:
                self.log.warning("Transactions of a previous run are still unmined after "
                                 "%.0f s; going on (the contract skips what it already has).",
                                 self.settings.recovery_timeout)
                return
            if self.stop.wait(0.2):
                raise StopRequested

    def _check_deliveries(self, now: float, after_outage: bool) -> None:
        """Settle entries Redis delivered to this consumer whose reply never arrived.

        When Redis goes away mid-command, an XREADGROUP may have run (its entries are now in
        this consumer's pending list) while its reply was lost, and ``>`` never delivers them
        again. Looked for after every Redis outage, and by count every few seconds.
        """
        if not after_outage and now < self._next_delivery_check:
            return
        self._next_delivery_check = now + DELIVERY_CHECK_INTERVAL
        held = self._held_entry_ids()
        if not after_outage and self.stream.own_pending_count() <= len(held):
            return
        lost = [entry for page in self.stream.own_pending() for entry in page
                if entry[0] not in held]
        if not lost:
            return
        self.log.warning("%d stream entries were delivered to this %s but their delivery never "
                         "arrived (a reply lost while Redis went away); settling them now.",
                         len(lost), self.service)
        self.metrics.add("received", len(lost))
        self.codec.take(lost, Delivery.LOST, self.desk)

    def _held_entry_ids(self) -> set[str]:
        """Every entry this process has read and not yet acknowledged."""
        codec = self.codec
        held = {entry_id for item in self._open.values()
                for entry_id in codec.entry_ids(item)}
        held.update(codec.waiting())
        held.update(self._acks)
        held.update(rejected.entry_id for rejected in self._dead)
        held.update(kept.entry_id for entries in self._filed.values() for kept in entries)
        return held

    # -- the loop ---------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        self._keep_lock(now)
        if now >= self._chain_retry_at:
            self._chain_step()
        if now >= self._redis_retry_at:
            self._redis_step(now)
        else:
            self.stop.wait(READ_BLOCK_MS / 1000)
        self._send_ready()
        self._report(now)

    def _chain_step(self) -> None:
        try:
            self.codec.before_poll(self.desk)
            new_head = self.writer.refresh()
            if new_head:
                # Send first: a transaction reaches the signers about half a second after it
                # is sent, and only what they hold when the next block arrives goes into the
                # one after; the receipts of earlier batches can wait.
                self._send_ready()
            if new_head or self.writer.refusal():
                outcomes, orphans = self.writer.poll()
                self._finish(outcomes)
                self.batcher.requeue(orphans)
        except ChainError as error:
            self._chain_down(error)
            return
        if self._chain_problem is not None:
            self.log.info("The chain answers again at %s.", self.settings.chain.rpc_url)
        self._chain_problem = None
        self._chain_backoff.reset()
        self.metrics.set(chain="ok")

    def _redis_step(self, now: float) -> None:
        try:
            self._flush_redis()
            self._check_deliveries(now, after_outage=self._redis_problem is not None)
            room = self.settings.max_queued - len(self._open) - len(self.codec.waiting())
            if room <= 0:
                self.stop.wait(READ_BLOCK_MS / 1000)
            else:
                entries = self.stream.read_new(min(READ_COUNT, room), READ_BLOCK_MS)
                self.metrics.add("received", len(entries))
                self.codec.take(entries, Delivery.NEW, self.desk)
                self._flush_redis()
            self._trim(now)
        except TRANSIENT as error:
            self._redis_down(error)
            return
        if self._redis_problem is not None:
            self.log.info("Redis answers again at %s.", masked_url(self.settings.redis_url))
        self._redis_problem = None
        self._redis_backoff.reset()
        self.metrics.set(redis="ok")

    def _trim(self, now: float) -> None:
        """Every few seconds: drop what is settled (so the stream holds only what waits,
        and stays bounded however much passes) and say whether the backlog is too long."""
        if now < self._next_trim:
            return
        self._next_trim = now + TRIM_INTERVAL
        length, age = self.stream.trim_settled()
        s = self.settings
        self._backlog_problem = backlog_problem(length, age, s.health_max_backlog,
                                                s.health_max_age, self.service.upper())
        self.metrics.set(backlog=length,
                         oldest_unsettled_s=None if age is None else round(age, 1))

    def _keep_lock(self, now: float) -> None:
        if now < self._redis_retry_at or now - self.lock.renewed_at < self.lock.ttl_ms / 3000:
            return
        try:
            self.lock.renew()
        except TRANSIENT as error:
            self._redis_down(error)
        except redis.ResponseError as error:
            if not out_of_memory(error):
                raise
            self._redis_down(error)  # renewing after expiry needs a SET, refused when full

    def _send_ready(self) -> None:
        """Send batches while items wait, the block's budget lasts and the lock is ours."""
        if self._chain_problem is not None or not self.lock.held():
            return
        sliver = min(self.profile.min_partial_batch, self.settings.max_batch)
        while self.batcher.ready():
            room = self.writer.room()
            if room <= 0 or (room < len(self.batcher) and room < sliver):
                return
            items = self.batcher.take(room)
            try:
                self.writer.submit(items)
            except ChainError as error:
                if not any(tx.items is items for tx in self.writer.in_flight.values()):
                    self.batcher.requeue(items)
                self._chain_down(error)
                return

    # -- acknowledgements out ---------------------------------------------------------

    def _finish(self, outcomes: Sequence[Outcome[I]]) -> None:
        """Settle the items of final batches; sort out reverted ones."""
        for outcome in outcomes:
            if outcome.succeeded:
                self.codec.mined(outcome, self.desk)
            else:
                self.metrics.add("reverted_batches")
                self.codec.reverted(outcome.transaction.items, self.desk)

    def _reject(self, rejected: Rejected) -> None:
        self.log.warning("Dead-lettering entry %s: %s", rejected.entry_id, rejected.reason)
        self._dead.append(rejected)

    def _flush_redis(self) -> None:
        """Write filed entries, dead letters and acknowledgements; kept for the next try if
        Redis fails."""
        for (stream, maxlen, counter), kept in list(self._filed.items()):
            self.stream.dead_letter(kept, to=stream, maxlen=maxlen)
            self.metrics.add(counter, len(kept))
            del self._filed[(stream, maxlen, counter)]
        if self._dead:
            self.stream.dead_letter(self._dead)
            self.metrics.add("dead_lettered", len(self._dead))
            self._dead = []
        if self._acks:
            self.stream.ack(self._acks)
            self._acks = []

    # -- trouble and reporting --------------------------------------------------------

    def _redis_down(self, error: Exception) -> None:
        delay = self._redis_backoff.next()
        self._redis_retry_at = time.monotonic() + delay
        if self._redis_problem is None:
            self.log.warning("Redis at %s is unreachable (%s); retrying with backoff up to "
                             "%.0f s.", masked_url(self.settings.redis_url), sentence(error),
                             self.settings.backoff_max)
        self._redis_problem = f"Redis at {masked_url(self.settings.redis_url)} is unreachable."
        self.metrics.set(redis="unreachable")

    def _chain_down(self, error: ChainError) -> None:
        delay = self._chain_backoff.next()
        self._chain_retry_at = time.monotonic() + delay
        if self._chain_problem is None:
            self.log.warning("%s Retrying with backoff up to %.0f s.", error,
                             self.settings.backoff_max)
        self._chain_problem = str(error)
        self.metrics.set(chain="unreachable")

    def _report(self, now: float) -> None:
        problem = self._redis_problem or self._chain_problem or self.writer.refusal()
        in_flight = self.writer.in_flight
        self.metrics.set(queued=len(self.batcher), pending=len(self._open),
                         nonce=max(in_flight) + 1 if in_flight else None,
                         state="degraded" if problem else "running", problem=problem,
                         warning=self._backlog_problem)
        if now >= self._next_report:
            self._next_report = now + self.settings.log_interval
            self.log.info("%s", self.metrics.summary())
