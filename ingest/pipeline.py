"""The ingest's loop: signed readings from the Redis stream, batches to ``submitReadings``,
acknowledgements after receipts. The machinery is the bridge's (:mod:`bridge.stream`,
:mod:`bridge.writer`, :mod:`bridge.batching`); this module decides what a reading's fate is.

Exactly once, end to end
------------------------
1. **Durable before acknowledged.** The HTTP endpoint and the MQTT subscriber append each
   reading to the stream; the ingest reads through a consumer group, so an entry stays
   pending until acknowledged.
2. **Acknowledged only after the chain has it.** An entry is acknowledged when the receipt
   carrying its reading is ``INGEST_CONFIRMATIONS`` blocks deep and shows its
   ``ReadingRecorded``, or dead-lettered (acknowledgement and dead letter in one Lua script)
   with the contract's reason when the receipt shows its ``ReadingRefused``, or with the
   ingest's own reason when it fails a check before the chain.
3. **Re-sent on restart.** A new ingest waits for its predecessor's transactions, then claims
   every pending entry and sends it again. The contract skips a reading it already stores
   identically, so a re-sent reading lands once; for such a *retried* entry the skip means
   settled. A reading that was never delivered before and meets the same reading on chain
   (or in flight) is an uploaded duplicate and dead-lettered as such.
4. **One writer** per stream (the bridge's Redis lock), and a start-up guard against a stream
   settled into another chain or contract before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

import redis

from bridge.batching import Batcher
from bridge.events import Rejected, entry_time_ms
from bridge.metrics import Metrics
from bridge.pipeline import Backoff
from bridge.stream import TRANSIENT, Entry, StreamConsumer, WriterLock, connect_redis
from bridge.writer import ChainWriter, Outcome
from ingest.batches import ReadingCodec, ReadingItem, fates
from ingest.config import IngestSettings
from ingest.errors import IngestConfigError, ReaderRoleMissing
from ingest.readings import ValidReading, decode_entry
from ingest.validation import MeterRegistry, contract_lookup, off_chain_problem, refusal_sentence
from pilotchain.chain import GWEI, ChainUnreachable, Sender, connect
from pilotchain.config import masked_url
from pilotchain.contract import load_deployment, settlement_contract
from pilotchain.errors import ChainError
from pilotchain.keys import KeyStore
from pilotchain.metering import Domain

log = logging.getLogger("ingest")
T = TypeVar("T")

READ_COUNT = 1000
READ_BLOCK_MS = 50
MIN_PARTIAL_BATCH = 20
# A batch that reverts (it should not: the contract refuses by event) is retried this often
# before its readings are dead-lettered.
MAX_REVERTS = 3
DELIVERY_CHECK_INTERVAL = 5.0
MINUTE_NOTE = ("A minute reading, signed by the meter's key: kept off chain; the meter's next "
               "boundary reading anchors it.")


class _StopRequested(Exception):
    """Stop was asked for while a start-up step was still waiting."""


class Ingest:
    """One ingest process's work; ``run`` returns when ``stop`` is set."""

    def __init__(self, settings: IngestSettings, metrics: Metrics | None = None,
                 stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.stop = stop or threading.Event()
        self.batcher: Batcher[ReadingItem] = Batcher(settings.max_batch, settings.linger)
        self._open: dict[str, ReadingItem] = {}  # queued or in flight, by entry id
        self._identities: dict[tuple[bytes, int, bytes], str] = {}  # open reading -> entry
        self._unchecked: list[tuple[ValidReading, bool]] = []  # waiting for the chain
        self._acks: list[str] = []
        self._dead: list[Rejected] = []
        self._minutes: list[Rejected] = []  # checked minute readings, kept off chain
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
            log.info("Stopped before the ingest was ready.")

    def _run(self) -> None:
        where = f"Redis at {masked_url(self.settings.redis_url)}"
        self.stream = self._until_ready(where, self._open_redis)
        self.writer = self._until_ready("the chain", self._open_chain)
        self.lock = WriterLock(self.stream.client, self.settings.stream, service="ingest")
        self._until_ready("Redis", lambda: self.lock.acquire(timeout=30.0))
        try:
            self._until_ready("Redis", lambda: self.stream.check_target(
                self.domain.chain_id, self.domain.contract))
            self._until_ready("the chain and Redis", self._recover)
            self.metrics.set(state="running")
            log.info("Ingest running: stream %s, group %s, Settlement %s, metrics %s.",
                     self.settings.stream, self.settings.group, self.domain.contract,
                     self.settings.metrics_url)
            while not self.stop.is_set():
                self._tick()
            try:
                self._flush_redis()
            except TRANSIENT as error:
                log.warning("Stopped without writing the last acknowledgements (%s).", error)
        finally:
            try:
                self.lock.release()
            except TRANSIENT:
                pass  # it expires by itself

    def _until_ready(self, what: str, step: Callable[[], T]) -> T:
        backoff = Backoff(self.settings.backoff_max)
        while True:
            try:
                return step()
            except (*TRANSIENT, ChainUnreachable) as error:
                delay = backoff.next()
                log.warning("Waiting for %s: %s (retrying in %.1f s)", what, error, delay)
                self.metrics.set(problem=f"Waiting for {what}: {error}")
                if self.stop.wait(delay):
                    raise _StopRequested from None

    # -- connecting -------------------------------------------------------------------

    def _open_redis(self) -> StreamConsumer:
        s = self.settings
        stream = StreamConsumer(connect_redis(s.redis_url), s.stream, s.group, s.consumer,
                                s.dead_letter_stream, service="ingest")
        try:
            stream.ensure_group()
        except (redis.AuthenticationError, redis.ResponseError) as error:
            raise IngestConfigError(
                f"Redis at {masked_url(s.redis_url)} refused the ingest ({error}); check "
                "REDIS_URL, or REDIS_HOST, REDIS_PORT and REDIS_PASSWORD_FILE."
            ) from None
        self.metrics.set(redis="ok")
        return stream

    def _open_chain(self) -> ChainWriter[ReadingItem]:
        s = self.settings
        url = s.chain.rpc_url
        w3 = connect(url)
        deployment = load_deployment(s.chain.deployment_file)
        contract = settlement_contract(w3, deployment)
        account = KeyStore(s.chain.keys_dir).role(s.key_role).unlock()
        sender = Sender(w3, account, url=url, priority_fee=int(s.priority_fee_gwei * GWEI))
        writer = ChainWriter(w3, sender, contract, s, self.metrics, url,
                             ReadingCodec(contract.abi))
        chain_id = sender.chain_id()
        if chain_id != deployment.chain_id:
            raise IngestConfigError(
                f"The deployment record {s.chain.deployment_file} is for chain "
                f"{deployment.chain_id}, but the node at {url} serves chain {chain_id}.")
        if not writer.read("Looking up Settlement", lambda: w3.eth.get_code(contract.address)):
            raise IngestConfigError(
                f"No contract at {contract.address} on the chain at {url}; deploy it with "
                "`pilotchain deploy` (./scripts/up does it) or fix DEPLOYMENT_FILE.")
        functions = contract.functions
        role = writer.read("Reading READER_ROLE", lambda: functions.READER_ROLE().call())
        if not writer.read("Checking the reader role",
                           lambda: functions.hasRole(role, account.address).call()):
            raise ReaderRoleMissing(
                f"The ingest account {account.address} does not hold READER_ROLE in Settlement "
                f"at {contract.address}; the operator must grant it (pilotchain deploy grants "
                f"it to keys/{s.key_role}).")
        self.slot_seconds = int(writer.read("Reading the slot length",
                                            lambda: functions.slotSeconds().call()))
        self.domain = Domain(chain_id, contract.address)
        lookup = contract_lookup(contract)
        self.registry = MeterRegistry(
            lambda meter: writer.read("Looking up a meter", lambda: lookup(meter)),
            s.unknown_meter_ttl)
        writer.refresh()
        self.metrics.set(chain="ok")
        return writer

    # -- recovery ---------------------------------------------------------------------

    def _recover(self) -> None:
        """Wait for the previous run's transactions, then take over every pending entry."""
        self._wait_for_own_transactions()
        recovered = 0
        for page in self.stream.claim_unacknowledged():
            self._accept(page, retried=True)
            recovered += len(page)
            self._flush_redis()
        if recovered:
            log.info("Recovered %d unacknowledged entries; sending them again (the contract "
                     "skips readings it already has).", recovered)

    def _wait_for_own_transactions(self) -> None:
        w3, address = self.writer.w3, self.writer.sender_address

        def count(block: Literal["pending", "latest"]) -> int:
            return self.writer.read("Reading the ingest account's nonce",
                                    lambda: w3.eth.get_transaction_count(address, block))

        pending = count("pending")
        if pending <= count("latest"):
            return
        deadline = time.monotonic() + self.settings.recovery_timeout
        while count("latest") < pending:
            if time.monotonic() >= deadline:
                log.warning("Transactions of a previous run are still unmined after %.0f s; "
                            "going on.", self.settings.recovery_timeout)
                return
            if self.stop.wait(0.2):
                raise _StopRequested

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
            if self._unchecked:
                waiting, self._unchecked = self._unchecked, []
                for index, (valid, retried) in enumerate(waiting):
                    try:
                        self._check(valid, retried)
                    except ChainError:
                        self._unchecked = waiting[index:]
                        raise
            new_head = self.writer.refresh()
            if new_head:
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

    def _redis_step(self, now: float) -> None:
        try:
            self._flush_redis()
            self._check_deliveries(now, after_outage=self._redis_problem is not None)
            room = self.settings.max_queued - len(self._open) - len(self._unchecked)
            if room <= 0:
                self.stop.wait(READ_BLOCK_MS / 1000)
            else:
                entries = self.stream.read_new(min(READ_COUNT, room), READ_BLOCK_MS)
                self.metrics.add("received", len(entries))
                self._accept(entries, retried=False)
                self._flush_redis()
        except TRANSIENT as error:
            self._redis_down(error)
            return
        if self._redis_problem is not None:
            log.info("Redis answers again at %s.", masked_url(self.settings.redis_url))
        self._redis_problem = None
        self._redis_backoff.reset()
        self.metrics.set(redis="ok")

    def _check_deliveries(self, now: float, after_outage: bool) -> None:
        """Take entries Redis delivered to this consumer whose reply was lost (see the
        bridge's loop, which does the same for trades)."""
        if not after_outage and now < self._next_delivery_check:
            return
        self._next_delivery_check = now + DELIVERY_CHECK_INTERVAL
        held = self._held_entry_ids()
        if not after_outage and self.stream.own_pending_count() <= len(held):
            return
        lost = [entry for page in self.stream.own_pending() for entry in page
                if entry[0] not in held]
        if lost:
            log.warning("%d stream entries were delivered but their reply was lost while "
                        "Redis went away; settling them now.", len(lost))
            self.metrics.add("received", len(lost))
            self._accept(lost, retried=True)

    def _held_entry_ids(self) -> set[str]:
        held = set(self._open)
        held.update(valid.entry_id for valid, _ in self._unchecked)
        held.update(self._acks)
        held.update(rejected.entry_id for rejected in (*self._dead, *self._minutes))
        return held

    def _keep_lock(self, now: float) -> None:
        if now < self._redis_retry_at or now - self.lock.renewed_at < self.lock.ttl_ms / 3000:
            return
        try:
            self.lock.renew()
        except TRANSIENT as error:
            self._redis_down(error)

    def _send_ready(self) -> None:
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

    def _accept(self, entries: Sequence[Entry], *, retried: bool) -> None:
        """Check entries' shape, then (with the chain) their meter, time and signature."""
        for entry_id, fields in entries:
            if entry_id in self._open:
                continue  # a retried recovery claims entries it already holds
            decoded = decode_entry(entry_id, fields)
            if isinstance(decoded, Rejected):
                self._reject(decoded)
            elif self._chain_problem is not None or self._unchecked:
                self._unchecked.append((decoded, retried))
            else:
                try:
                    self._check(decoded, retried)
                except ChainError as error:
                    self._unchecked.append((decoded, retried))
                    self._chain_down(error)

    def _check(self, valid: ValidReading, retried: bool) -> None:
        problem = off_chain_problem(valid.signed, self.registry, self.domain,
                                    self.slot_seconds, time.time())
        if problem is not None:
            self._reject(Rejected(valid.entry_id, problem, valid.payload))
            return
        if valid.signed.reading.time % self.slot_seconds:
            self._minutes.append(Rejected(valid.entry_id, MINUTE_NOTE, valid.payload))
            return
        item = ReadingItem(valid.entry_id, valid.signed, valid.payload,
                           entry_time_ms(valid.entry_id), retried=retried)
        earlier = self._identities.get(item.identity)
        if earlier is not None and not retried:
            self._reject(Rejected(item.entry_id, self._duplicate(item, f"entry {earlier}, "
                                                                       "which is being settled"),
                                  item.payload))
            return
        self._open[item.entry_id] = item
        self._identities.setdefault(item.identity, item.entry_id)
        self.batcher.add(item)

    @staticmethod
    def _duplicate(item: ReadingItem, of: str) -> str:
        r = item.signed.reading
        return (f"Duplicate: the reading of meter 0x{r.meter.hex()} at {r.time} is the same as "
                f"{of}; it was not sent again.")

    def _reject(self, rejected: Rejected) -> None:
        log.warning("Dead-lettering entry %s: %s", rejected.entry_id, rejected.reason)
        self._dead.append(rejected)

    def _close(self, item: ReadingItem) -> None:
        self._open.pop(item.entry_id, None)
        if self._identities.get(item.identity) == item.entry_id:
            del self._identities[item.identity]

    def _finish(self, outcomes: Sequence[Outcome[ReadingItem]]) -> None:
        """Acknowledge, dead-letter or re-send each reading of the final batches."""
        for outcome in outcomes:
            items = outcome.transaction.items
            if not outcome.succeeded:
                self._reverted(items)
                continue
            fate = fates(items, outcome.receipt)
            for index in fate.recorded:
                self._acks.append(items[index].entry_id)
            for index in fate.duplicates:
                item = items[index]
                if item.retried:
                    self._acks.append(item.entry_id)  # our own earlier transaction, likely
                    self.metrics.add("already_recorded")
                else:
                    self._reject(Rejected(item.entry_id,
                                          self._duplicate(item, "a reading already on chain"),
                                          item.payload))
                    self.metrics.add("duplicates")
            for index, reason in fate.refused.items():
                item = items[index]
                self._reject(Rejected(item.entry_id, refusal_sentence(item.signed, reason),
                                      item.payload))
            for item in items:
                self._close(item)
            self.metrics.add("recorded", len(fate.recorded))
            self.metrics.add("settled", len(fate.recorded) + len(fate.duplicates))

    def _reverted(self, items: list[ReadingItem]) -> None:
        self.metrics.add("reverted_batches")
        again = []
        for item in items:
            item.reverts += 1
            if item.reverts >= MAX_REVERTS:
                self._close(item)
                self._reject(Rejected(item.entry_id, "Settlement reverted every batch that held "
                                      f"this reading ({MAX_REVERTS} times).", item.payload))
            else:
                again.append(item)
        log.warning("A batch of %d readings reverted; sending %d again.", len(items), len(again))
        self.batcher.requeue(again)

    def _flush_redis(self) -> None:
        if self._minutes:
            self.stream.dead_letter(self._minutes, to=self.settings.minutes_stream)
            self.metrics.add("minute_readings", len(self._minutes))
            self._minutes = []
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
            log.warning("Redis at %s is unreachable (%s); retrying with backoff.",
                        masked_url(self.settings.redis_url), error)
        self._redis_problem = f"Redis at {masked_url(self.settings.redis_url)} is unreachable."
        self.metrics.set(redis="unreachable")

    def _chain_down(self, error: ChainError) -> None:
        delay = self._chain_backoff.next()
        self._chain_retry_at = time.monotonic() + delay
        if self._chain_problem is None:
            log.warning("%s Retrying with backoff.", error)
        self._chain_problem = str(error)
        self.metrics.set(chain="unreachable")

    def _report(self, now: float) -> None:
        problem = self._redis_problem or self._chain_problem or self.writer.refusal()
        self.metrics.set(queued=len(self.batcher), pending=len(self._open),
                         state="degraded" if problem else "running", problem=problem)
        if now >= self._next_report:
            self._next_report = now + self.settings.log_interval
            log.info("%s", self.metrics.summary())


