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
import time
from collections.abc import Sequence
from typing import Any

from bridge.events import Rejected, entry_time_ms
from bridge.loop import StreamLoop
from bridge.stream import Entry
from bridge.writer import BatchCodec, ChainWriter, Outcome
from ingest.batches import ReadingCodec, ReadingItem, fates
from ingest.config import IngestSettings
from ingest.errors import IngestConfigError, ReaderRoleMissing
from ingest.readings import ValidReading, decode_entry
from ingest.validation import (
    MeterRegistry,
    Registrations,
    contract_lookup,
    off_chain_problem,
    refusal_sentence,
)
from pilotchain.contract import load_deployment
from pilotchain.errors import ChainError
from pilotchain.metering import Domain
from pilotchain.settlement import SettlementABI, eth_call

# A batch that reverts (it should not: the contract refuses by event) is retried this often
# before its readings are dead-lettered.
MAX_REVERTS = 3
MINUTE_NOTE = ("A minute reading, signed by the meter's key: kept off chain; the meter's next "
               "boundary reading anchors it.")


class Ingest(StreamLoop[IngestSettings, str, ReadingItem]):
    """One ingest process's work (keyed by entry id); ``run`` returns when ``stop`` is set."""

    service = "ingest"
    log = logging.getLogger("ingest")
    config_error = IngestConfigError
    role = "READER_ROLE"
    role_missing = ReaderRoleMissing
    min_partial_batch = 20
    resend_note = "the contract skips readings it already has"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._identities: dict[tuple[bytes, int, bytes], str] = {}  # open reading -> entry
        self._unchecked: list[tuple[ValidReading, bool]] = []  # waiting for the chain
        self._minutes: list[Rejected] = []  # checked minute readings, kept off chain

    def _codec(self, abi: Any) -> BatchCodec[ReadingItem]:
        return ReadingCodec(abi)

    def _connected(self, writer: ChainWriter[ReadingItem], contract: Any,
                   chain_id: int) -> None:
        abi = SettlementABI(contract.abi)
        self._slot_seconds_call = lambda: eth_call(writer.w3, contract.address,
                                                   abi.slot_seconds())
        self.slot_seconds = writer.read("Reading the slot length", self._slot_seconds_call)
        self.domain = Domain(chain_id, contract.address)
        lookup = contract_lookup(contract)
        deployment = load_deployment(self.settings.chain.deployment_file)
        registrations = Registrations(writer.w3, writer.url, contract.address,
                                      deployment.block_number)
        self.registry = MeterRegistry(
            lambda meter: writer.read("Looking up a meter", lambda: lookup(meter)),
            self.settings.unknown_meter_ttl, registrations.new)

    def _read_slot_length(self) -> int:
        return self.writer.read("Reading the slot length", self._slot_seconds_call)

    def _entry_ids(self, item: ReadingItem) -> Sequence[str]:
        return (item.entry_id,)

    def _held_entry_ids(self) -> set[str]:
        held = super()._held_entry_ids()
        held.update(valid.entry_id for valid, _ in self._unchecked)
        held.update(rejected.entry_id for rejected in self._minutes)
        return held

    def _held_count(self) -> int:
        return len(self._open) + len(self._unchecked)

    # -- recovery ---------------------------------------------------------------------

    def _take_over(self, entries: Sequence[Entry]) -> None:
        self._accept(entries, retried=True)

    def _take_lost(self, entries: Sequence[Entry]) -> None:
        self._accept(entries, retried=True)

    def _log_recovery(self, recovered: int, took: float, waited: float) -> None:
        self.log.info("Recovered %d unacknowledged entries; sending them again (%s).",
                      recovered, self.resend_note)

    # -- entries in, acknowledgements out ---------------------------------------------

    def _take_new(self, entries: Sequence[Entry]) -> None:
        self._accept(entries, retried=False)

    def _before_chain_poll(self) -> None:
        """Check the readings that waited for the chain, in the order they came."""
        if not self._unchecked:
            return
        waiting, self._unchecked = self._unchecked, []
        for index, (valid, retried) in enumerate(waiting):
            try:
                self._check(valid, retried)
            except ChainError:
                self._unchecked = waiting[index:]
                raise

    def _accept(self, entries: Sequence[Entry], *, retried: bool) -> None:
        """Check entries' shape, then (with the chain) their meter, time and signature."""
        # A retried recovery claims entries it already holds: those are skipped.
        decoded_entries = [decode_entry(entry_id, fields) for entry_id, fields in entries
                           if entry_id not in self._open]
        if self._chain_problem is None and not self._unchecked:
            try:
                first_meter = not self.registry.knows_a_meter()
                self.registry.prefetch(d.signed.reading.meter for d in decoded_entries
                                       if not isinstance(d, Rejected))
                if first_meter and self.registry.knows_a_meter():
                    # As in _check: the slot length is final once a meter is registered.
                    self.slot_seconds = self._read_slot_length()
            except ChainError as error:
                self._chain_down(error)
        for decoded in decoded_entries:
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

    def _close(self, item: ReadingItem) -> None:
        self._open.pop(item.entry_id, None)
        if self._identities.get(item.identity) == item.entry_id:
            del self._identities[item.identity]

    def _mined(self, outcome: Outcome[ReadingItem]) -> None:
        """Acknowledge, dead-letter or re-send each reading of a mined batch."""
        items = outcome.transaction.items
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
        again = []
        for item in items:
            item.reverts += 1
            if item.reverts >= MAX_REVERTS:
                self._close(item)
                self._reject(Rejected(item.entry_id, "Settlement reverted every batch that held "
                                      f"this reading ({MAX_REVERTS} times).", item.payload))
            else:
                again.append(item)
        self.log.warning("A batch of %d readings reverted; sending %d again.", len(items),
                         len(again))
        self.batcher.requeue(again)

    def _flush_redis(self) -> None:
        if self._minutes:
            self.stream.dead_letter(self._minutes, to=self.settings.minutes_stream,
                                    maxlen=self.settings.minutes_maxlen)
            self.metrics.add("minute_readings", len(self._minutes))
            self._minutes = []
        super()._flush_redis()
