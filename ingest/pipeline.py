"""The ingest: signed readings from the Redis stream, batches to ``submitReadings``,
acknowledgements after receipts. The machinery is the worker's (:mod:`worker.loop`,
:mod:`worker.stream`, :mod:`worker.writer`); :class:`IngestCodec` decides what a reading's
fate is.

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
4. **One writer** per stream (the worker's Redis lock), and a start-up guard against a stream
   settled into another chain or contract before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from ingest.batches import READING_GAS, ReadingCodec, ReadingItem, fates
from ingest.config import IngestSettings
from ingest.readings import ValidReading, decode_entry
from ingest.validation import (
    MeterRegistry,
    Registrations,
    contract_lookup,
    off_chain_problem,
    refusal_sentence,
)
from pilotchain.errors import ChainError
from pilotchain.metering import Domain
from pilotchain.settlement import SettlementABI, eth_call
from worker.codec import ChainLink, Delivery, Desk, Profile
from worker.entries import Entry, Rejected, entry_time_ms
from worker.gas import ItemGas
from worker.loop import Worker
from worker.metrics import Counter, Metrics
from worker.writer import Outcome

# A batch that reverts (it should not: the contract refuses by event) is retried this often
# before its readings are dead-lettered.
MAX_REVERTS = 3
MINUTE_NOTE = ("A minute reading, signed by the meter's key: kept off chain; the meter's next "
               "boundary reading anchors it.")
MINUTE_READINGS = Counter("minute_readings", "pilotchain_minute_readings",
                          "Minute readings kept off chain (their anchor goes on chain).")
log = logging.getLogger("ingest")


class IngestCodec:
    """What the worker needs to know of readings (keyed by entry id)."""

    item_gas: ItemGas = READING_GAS
    profile = Profile(service="ingest", role="READER_ROLE", min_partial_batch=20,
                      metrics=(MINUTE_READINGS,))

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self._identities: dict[tuple[bytes, int, bytes], str] = {}  # open reading -> entry
        self._unchecked: list[tuple[ValidReading, bool]] = []  # waiting for the chain
        self._calldata: ReadingCodec | None = None
        self._chain: ChainLink | None = None

    def connected(self, chain: ChainLink) -> None:
        contract = chain.contract
        self._calldata = ReadingCodec(contract.abi)
        abi = SettlementABI(contract.abi)
        self._slot_seconds_call: Callable[[], int] = lambda: eth_call(
            chain.w3, contract.address, abi.slot_seconds())
        self.slot_seconds = chain.read("Reading the slot length", self._slot_seconds_call)
        self.domain = Domain(chain.chain_id, contract.address)
        lookup = contract_lookup(contract)
        registrations = Registrations(chain.w3, chain.url, contract.address,
                                      chain.deployment.block_number)
        self.registry = MeterRegistry(
            lambda meter: chain.read("Looking up a meter", lambda: lookup(meter)),
            self.settings.unknown_meter_ttl, registrations.new)
        self._chain = chain

    def calldata(self, items: Sequence[ReadingItem]) -> bytes:
        assert self._calldata is not None, "the worker sends only once connected"
        return self._calldata.calldata(items)

    def _read_slot_length(self) -> int:
        assert self._chain is not None
        return self._chain.read("Reading the slot length", self._slot_seconds_call)

    def entry_ids(self, item: ReadingItem) -> Sequence[str]:
        return (item.entry_id,)

    def waiting(self) -> Sequence[str]:
        return [valid.entry_id for valid, _ in self._unchecked]

    def recovered(self, count: int, took: float, waited: float,
                  desk: Desk[ReadingItem]) -> str:
        return (f"Recovered {count} unacknowledged entries; sending them again (the contract "
                "skips readings it already has).")

    # -- entries in, acknowledgements out ---------------------------------------------

    def take(self, entries: Sequence[Entry], delivery: Delivery,
             desk: Desk[ReadingItem]) -> None:
        self._accept(entries, desk, retried=delivery is not Delivery.NEW)

    def before_poll(self, desk: Desk[ReadingItem]) -> None:
        """Check the readings that waited for the chain, in the order they came."""
        if not self._unchecked:
            return
        waiting, self._unchecked = self._unchecked, []
        for index, (valid, retried) in enumerate(waiting):
            try:
                self._check(valid, retried, desk)
            except ChainError:
                self._unchecked = waiting[index:]
                raise

    def _accept(self, entries: Sequence[Entry], desk: Desk[ReadingItem], *,
                retried: bool) -> None:
        """Check entries' shape, then (with the chain) their meter, time and signature."""
        # A retried recovery claims entries it already holds: those are skipped.
        decoded_entries = [decode_entry(entry_id, fields) for entry_id, fields in entries
                           if desk.open_item(entry_id) is None]
        if desk.chain_ok and not self._unchecked:
            try:
                first_meter = not self.registry.knows_a_meter()
                self.registry.prefetch(d.signed.reading.meter for d in decoded_entries
                                       if not isinstance(d, Rejected))
                if first_meter and self.registry.knows_a_meter():
                    # As in _check: the slot length is final once a meter is registered.
                    self.slot_seconds = self._read_slot_length()
            except ChainError as error:
                desk.chain_down(error)
        for decoded in decoded_entries:
            if isinstance(decoded, Rejected):
                desk.reject(decoded)
            elif not desk.chain_ok or self._unchecked:
                self._unchecked.append((decoded, retried))
            else:
                try:
                    self._check(decoded, retried, desk)
                except ChainError as error:
                    self._unchecked.append((decoded, retried))
                    desk.chain_down(error)

    def _check(self, valid: ValidReading, retried: bool, desk: Desk[ReadingItem]) -> None:
        if not self.registry.knows_a_meter() and \
                self.registry.signer(valid.signed.reading.meter) is not None:
            # The operator may still change the slot length until the first meter or rates
            # are set, so it is read again when the first registered meter is seen; after
            # that it is fixed for good. (Read per reading while none was seen, a flood of
            # unknown meters cost a chain call each: 100 readings a second.) A reading of an
            # unknown meter is refused before its time matters.
            self.slot_seconds = self._read_slot_length()
        problem = off_chain_problem(valid.signed, self.registry, self.domain,
                                    self.slot_seconds, time.time())
        if problem is not None:
            desk.reject(Rejected(valid.entry_id, problem, valid.payload))
            return
        if valid.signed.reading.time % self.slot_seconds:
            desk.file(Rejected(valid.entry_id, MINUTE_NOTE, valid.payload),
                      self.settings.minutes_stream, self.settings.minutes_maxlen,
                      MINUTE_READINGS.key)
            return
        item = ReadingItem(valid.entry_id, valid.signed, valid.payload,
                           entry_time_ms(valid.entry_id), retried=retried)
        earlier = self._identities.get(item.identity)
        if earlier is not None and not retried:
            desk.reject(Rejected(item.entry_id, self._duplicate(item, f"entry {earlier}, "
                                                                     "which is being settled"),
                                 item.payload))
            return
        desk.queue(item)
        self._identities.setdefault(item.identity, item.entry_id)

    @staticmethod
    def _duplicate(item: ReadingItem, of: str) -> str:
        r = item.signed.reading
        return (f"Duplicate: the reading of meter 0x{r.meter.hex()} at {r.time} is the same as "
                f"{of}; it was not sent again.")

    def _close(self, item: ReadingItem, desk: Desk[ReadingItem]) -> None:
        desk.close(item)
        if self._identities.get(item.identity) == item.entry_id:
            del self._identities[item.identity]

    def mined(self, outcome: Outcome[ReadingItem], desk: Desk[ReadingItem]) -> None:
        """Acknowledge, dead-letter or re-send each reading of a mined batch."""
        items = outcome.transaction.items
        fate = fates(items, outcome.receipt)
        desk.ack(items[index].entry_id for index in fate.recorded)
        for index in fate.duplicates:
            item = items[index]
            if item.retried:
                desk.ack((item.entry_id,))  # our own earlier transaction, likely
                desk.metrics.add("already_recorded")
            else:
                desk.reject(Rejected(item.entry_id,
                                     self._duplicate(item, "a reading already on chain"),
                                     item.payload))
                desk.metrics.add("duplicates")
        for index, reason in fate.refused.items():
            item = items[index]
            desk.reject(Rejected(item.entry_id, refusal_sentence(item.signed, reason),
                                 item.payload))
        for item in items:
            self._close(item, desk)
        desk.metrics.add("recorded", len(fate.recorded))
        desk.metrics.add("settled", len(fate.recorded) + len(fate.duplicates))

    def reverted(self, items: list[ReadingItem], desk: Desk[ReadingItem]) -> None:
        again = []
        for item in items:
            item.reverts += 1
            if item.reverts >= MAX_REVERTS:
                self._close(item, desk)
                desk.reject(Rejected(item.entry_id, "Settlement reverted every batch that held "
                                     f"this reading ({MAX_REVERTS} times).", item.payload))
            else:
                again.append(item)
        log.warning("A batch of %d readings reverted; sending %d again.", len(items),
                    len(again))
        desk.requeue(again)


class Ingest:
    """One ingest process's work; ``run`` returns when ``stop`` is set."""

    def __init__(self, settings: IngestSettings, metrics: Metrics | None = None,
                 stop: threading.Event | None = None) -> None:
        self.worker = Worker(settings, IngestCodec(settings), metrics, stop)

    def run(self) -> None:
        self.worker.run()
