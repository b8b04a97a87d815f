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
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar

import redis
from eth_account.signers.local import LocalAccount

from bridge.batching import Batcher, Item
from bridge.config import BridgeSettings
from bridge.diagnosis import refused_trade
from bridge.errors import BridgeConfigError, RecorderRoleMissing
from bridge.events import Rejected, ValidTrade, decode_entry, entry_time_ms
from bridge.metrics import Metrics
from bridge.recorded import is_recorded
from bridge.stream import TRANSIENT, Entry, StreamConsumer, WriterLock, connect_redis
from bridge.writer import ChainWriter, Outcome, TradeCodec
from pilotchain.chain import GWEI, ChainUnreachable, Sender, connect
from pilotchain.config import masked_url
from pilotchain.contract import load_deployment, settlement_contract
from pilotchain.errors import ChainError
from pilotchain.keys import KeyStore

log = logging.getLogger("bridge")
T = TypeVar("T")

READ_COUNT = 1000
READ_BLOCK_MS = 50
# Below this many trades of room in the current block, wait for the next block's budget
# instead of sending a sliver (every transaction costs ~33k gas on top of its trades).
MIN_PARTIAL_BATCH = 50
IS_RECORDED_CHUNK = 200
# How often the bridge compares its own pending count in Redis with what it holds.
DELIVERY_CHECK_INTERVAL = 5.0


class _StopRequested(Exception):
    """Stop was asked for while a start-up step was still waiting."""


class Backoff:
    """Exponential retry delays from 0.1 s up to a ceiling."""

    def __init__(self, ceiling: float) -> None:
        self.ceiling = ceiling
        self.delay = 0.0

    def next(self) -> float:
        self.delay = min(self.ceiling, max(0.1, self.delay * 2))
        return self.delay

    def reset(self) -> None:
        self.delay = 0.0


class Bridge:
    """One bridge process's work; ``run`` returns when ``stop`` is set."""

    def __init__(self, settings: BridgeSettings, metrics: Metrics | None = None,
                 stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.stop = stop or threading.Event()
        self.batcher: Batcher[Item] = Batcher(settings.max_batch, settings.linger)
        self._open: dict[uuid.UUID, Item] = {}  # queued or in flight, by trade id
        self._acks: list[str] = []
        self._dead: list[Rejected] = []
        self._redis_backoff = Backoff(settings.backoff_max)
        self._chain_backoff = Backoff(settings.backoff_max)
        self._redis_retry_at = 0.0
        self._chain_retry_at = 0.0
        self._redis_problem: str | None = None
        self._chain_problem: str | None = None
        self._next_report = 0.0
        self._next_delivery_check = 0.0

    # -- life cycle -------------------------------------------------------------------

    def run(self) -> None:
        """Connect, recover what a previous run left, then settle until stopped."""
        try:
            self._run()
        except _StopRequested:
            log.info("Stopped before the bridge was ready.")

    def _run(self) -> None:
        where = (f"Redis at {masked_url(self.settings.redis_url)} (set by REDIS_URL, or "
                 "REDIS_HOST and REDIS_PORT)")
        self.stream = self._until_ready(where, self._open_redis)
        self.writer = self._until_ready("the chain", self._open_chain)
        self.lock = WriterLock(self.stream.client, self.settings.stream)
        self._until_ready("Redis", lambda: self.lock.acquire(timeout=30.0))
        try:
            self._until_ready("Redis", lambda: self.stream.check_target(
                self.writer.sender.chain_id(), self.writer.contract_address))
            self._until_ready("the chain and Redis", self._recover)
            self.metrics.set(state="running")
            log.info("Bridge running: stream %s, group %s, Settlement %s, metrics %s.",
                     self.settings.stream, self.settings.group, self.writer.contract_address,
                     self.settings.metrics_url)
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
            log.warning("Stopped without writing the last acknowledgements (%s).", error)

    def _until_ready(self, what: str, step: Callable[[], T]) -> T:
        """Run a start-up step until Redis and the node answer; other errors propagate."""
        backoff = Backoff(self.settings.backoff_max)
        while True:
            try:
                return step()
            except (*TRANSIENT, ChainUnreachable) as error:
                delay = backoff.next()
                log.warning("Waiting for %s: %s (retrying in %.1f s)", what,
                            _sentence(error), delay)
                self.metrics.set(problem=f"Waiting for {what}: {_sentence(error)}")
                if self.stop.wait(delay):
                    raise _StopRequested from None

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
                             s.dead_letter_stream)
        try:
            stream.ensure_group()
        except (redis.AuthenticationError, redis.ResponseError) as error:
            # A wrong or missing password, or a Redis that only takes local clients: waiting
            # will not change it.
            raise BridgeConfigError(
                f"Redis at {masked_url(s.redis_url)} refused the bridge ({error}); check "
                "REDIS_URL, or REDIS_HOST, REDIS_PORT and REDIS_PASSWORD_FILE."
            ) from None
        self.metrics.set(redis="ok")
        return stream

    def _open_chain(self) -> ChainWriter[Item]:
        """Connect, load the deployment and check it is live and lets the bridge record."""
        s = self.settings
        url = s.chain.rpc_url
        w3 = connect(url)
        deployment = load_deployment(s.chain.deployment_file)
        contract = settlement_contract(w3, deployment)
        account = KeyStore(s.chain.keys_dir).role(s.key_role).unlock()
        sender = Sender(w3, account, url=url, priority_fee=int(s.priority_fee_gwei * GWEI))
        writer = ChainWriter(w3, sender, contract, s, self.metrics, url,
                             TradeCodec(contract.abi))
        chain_id = sender.chain_id()
        if chain_id != deployment.chain_id:
            raise BridgeConfigError(
                f"The deployment record {s.chain.deployment_file} is for chain "
                f"{deployment.chain_id}, but the node at {url} serves chain {chain_id}."
            )
        if not writer.read("Looking up Settlement", lambda: w3.eth.get_code(contract.address)):
            raise BridgeConfigError(
                f"No contract at {contract.address} on the chain at {url}; deploy it with "
                "`pilotchain deploy` (./scripts/up does it) or fix DEPLOYMENT_FILE."
            )
        self._check_role(writer, contract, account)
        writer.refresh()
        self.metrics.set(chain="ok")
        return writer

    @staticmethod
    def _check_role(writer: ChainWriter[Item], contract: Any, account: LocalAccount) -> None:
        functions = contract.functions
        role = writer.read("Reading RECORDER_ROLE", lambda: functions.RECORDER_ROLE().call())
        if not writer.read("Checking the recorder role",
                           lambda: functions.hasRole(role, account.address).call()):
            raise RecorderRoleMissing(
                f"The bridge account {account.address} does not hold RECORDER_ROLE in "
                f"Settlement at {writer.contract_address}; the operator must grant it (pilotchain "
                "deploy grants it to keys/bridge)."
            )

    # -- recovery ---------------------------------------------------------------------

    def _recover(self) -> None:
        """Settle what a previous run left: wait for its transactions, then re-check every
        unacknowledged entry against the contract."""
        began = time.monotonic()
        self._wait_for_own_transactions()
        waited = time.monotonic() - began
        recovered = 0
        for page in self.stream.claim_unacknowledged():
            self._settle_unacknowledged(page, self._recorded)
            recovered += len(page)
            self._flush_redis()
        if recovered:
            log.info("Recovered %d unacknowledged entries in %.1f s (%.1f s waiting for the "
                     "previous run's transactions): %d already on chain, %d to send.",
                     recovered, time.monotonic() - began, waited,
                     self.metrics.get("already_recorded"), len(self.batcher))

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
        log.warning("%d stream entries were delivered to this bridge but their delivery never "
                    "arrived (a reply lost while Redis went away); settling them now.",
                    len(lost))
        self.metrics.add("received", len(lost))
        self._settle_unacknowledged(lost, self._recorded_if_reachable)

    def _held_entry_ids(self) -> set[str]:
        """Every entry this bridge has read and not yet acknowledged."""
        held = {entry_id for item in self._open.values() for entry_id in item.entry_ids}
        held.update(self._acks)
        held.update(rejected.entry_id for rejected in self._dead)
        return held

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

    def _wait_for_own_transactions(self) -> None:
        w3, address = self.writer.w3, self.writer.sender_address

        def count(block: Literal["pending", "latest"]) -> int:
            return self.writer.read("Reading the bridge account's nonce",
                                    lambda: w3.eth.get_transaction_count(address, block))

        pending, mined = count("pending"), count("latest")
        if pending <= mined:
            return
        log.info("Waiting for %d transactions of a previous run to be mined.", pending - mined)
        deadline = time.monotonic() + self.settings.recovery_timeout
        while count("latest") < pending:
            if time.monotonic() >= deadline:
                log.warning("Transactions of a previous run are still unmined after %.0f s; "
                            "going on (the contract skips any trade recorded twice).",
                            self.settings.recovery_timeout)
                return
            if self.stop.wait(0.2):
                raise _StopRequested

    def _recorded(self, trade_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """Which of ``trade_ids`` the contract has recorded (batches of raw eth_calls:
        web3's contract layer costs ten times the node's own time per call here)."""
        ids = list(trade_ids)
        found: set[uuid.UUID] = set()
        for start in range(0, len(ids), IS_RECORDED_CHUNK):
            chunk = ids[start:start + IS_RECORDED_CHUNK]
            answers = is_recorded(self.writer.w3, self.writer.url, self.writer.contract_address,
                                  chunk)
            found.update(trade_id for trade_id, yes in zip(chunk, answers, strict=True) if yes)
        return found

    # -- the loop ---------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.monotonic()
        self._keep_lock(now)
        if now >= self._chain_retry_at:
            self._chain_step()
        if now >= self._redis_retry_at:
            self._redis_step()
        else:
            self.stop.wait(READ_BLOCK_MS / 1000)
        self._send_ready()
        self._report(now)

    def _chain_step(self) -> None:
        try:
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
            log.info("The chain answers again at %s.", self.settings.chain.rpc_url)
        self._chain_problem = None
        self._chain_backoff.reset()
        self.metrics.set(chain="ok")

    def _redis_step(self) -> None:
        now = time.monotonic()
        try:
            self._flush_redis()
            self._check_deliveries(now, after_outage=self._redis_problem is not None)
            room = self.settings.max_queued - len(self._open)
            if room <= 0:
                self.stop.wait(READ_BLOCK_MS / 1000)
            else:
                entries = self.stream.read_new(min(READ_COUNT, room), READ_BLOCK_MS)
                self.metrics.add("received", len(entries))
                self._decode_all(entries, enqueue=True)
                self._flush_redis()
        except TRANSIENT as error:
            self._redis_down(error)
            return
        if self._redis_problem is not None:
            log.info("Redis answers again at %s.", masked_url(self.settings.redis_url))
        self._redis_problem = None
        self._redis_backoff.reset()
        self.metrics.set(redis="ok")

    def _keep_lock(self, now: float) -> None:
        if now < self._redis_retry_at or now - self.lock.renewed_at < self.lock.ttl_ms / 3000:
            return
        try:
            self.lock.renew()
        except TRANSIENT as error:
            self._redis_down(error)

    def _send_ready(self) -> None:
        """Send batches while trades wait, the block's budget lasts and the lock is ours."""
        if self._chain_problem is not None or not self.lock.held():
            return
        sliver = min(MIN_PARTIAL_BATCH, self.settings.max_batch)
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

    # -- entries in, acknowledgements out ---------------------------------------------

    def _decode_all(self, entries: Sequence[Entry], *, enqueue: bool = False) -> list[Item]:
        """Validate entries: rejects to the dead-letter queue, the rest as items."""
        items = []
        for entry_id, fields in entries:
            decoded = decode_entry(entry_id, fields)
            if isinstance(decoded, Rejected):
                log.warning("Dead-lettering entry %s: %s", entry_id, decoded.reason)
                self._dead.append(decoded)
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

    def _finish(self, outcomes: Sequence[Outcome[Item]]) -> None:
        """Acknowledge the trades of mined batches; sort out reverted ones."""
        for outcome in outcomes:
            items = outcome.transaction.items
            if not outcome.succeeded:
                self._reverted(items)
                continue
            recorded, skipped = outcome.counts()
            for item in items:
                self._acks.extend(item.entry_ids)
                self._open.pop(item.record.trade_id, None)
            self.metrics.add("settled", len(items))
            self.metrics.add("recorded", recorded)
            self.metrics.add("already_recorded", skipped)

    def _reverted(self, items: list[Item]) -> None:
        """A batch reverted: dead-letter the trade the contract refuses, send the rest."""
        self.metrics.add("reverted_batches")
        writer = self.writer
        index = refused_trade(writer.w3, writer.url, writer.contract, writer.sender_address,
                              [item.record for item in items])
        if index is not None and 0 <= index < len(items):
            bad = items.pop(index)
            self._open.pop(bad.record.trade_id, None)
            reason = (f"Trade {bad.record.trade_id} cannot be recorded: the Settlement "
                      f"contract refuses it (InvalidTrade).")
            self._dead.extend(Rejected(entry_id, reason, "") for entry_id in bad.entry_ids)
        log.warning("A batch reverted; sending its other %d trades again.", len(items))
        self.batcher.requeue(items)

    def _flush_redis(self) -> None:
        """Write dead letters and acknowledgements; kept for the next try if Redis fails."""
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
            log.warning("Redis at %s is unreachable (%s); retrying with backoff up to %.0f s.",
                        masked_url(self.settings.redis_url), _sentence(error),
                        self.settings.backoff_max)
        self._redis_problem = f"Redis at {masked_url(self.settings.redis_url)} is unreachable."
        self.metrics.set(redis="unreachable")

    def _chain_down(self, error: ChainError) -> None:
        delay = self._chain_backoff.next()
        self._chain_retry_at = time.monotonic() + delay
        if self._chain_problem is None:
            log.warning("%s Retrying with backoff up to %.0f s.", error,
                        self.settings.backoff_max)
        self._chain_problem = str(error)
        self.metrics.set(chain="unreachable")

    def _report(self, now: float) -> None:
        problem = self._redis_problem or self._chain_problem or self.writer.refusal()
        self.metrics.set(queued=len(self.batcher), pending=len(self._open),
                         nonce=_next_nonce(self.writer),
                         state="degraded" if problem else "running", problem=problem)
        if now >= self._next_report:
            self._next_report = now + self.settings.log_interval
            log.info("%s", self.metrics.summary())


def _item(valid: ValidTrade) -> Item:
    return Item(valid.record, [valid.entry_id], entry_time_ms(valid.entry_id))


def _next_nonce(writer: ChainWriter[Any]) -> int | None:
    return max(writer.in_flight) + 1 if writer.in_flight else None


def _sentence(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text if text.endswith(".") else f"{text}."

