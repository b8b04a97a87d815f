"""Readings on their way to ``submitReadings``: queued items, their calldata, and each
reading's fate read back from the receipt's events."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ingest.errors import IngestConfigError
from pilotchain.events import READING_RECORDED, READING_REFUSED, decode_as, event_of
from pilotchain.metering import SignedReading
from pilotchain.settlement import InterfaceError, SettlementABI
from worker.gas import ItemGas
from worker.receipts import Receipt

# The catalogue's, under the name benchmarks/metering_load.py imports from here.
READING_RECORDED_TOPIC = READING_RECORDED.topic
# One reading's calldata: its offset in the array, five words, the signature's offset and
# length, and 65 bytes padded to 96.
CALLDATA_BYTES_PER_READING = 32 + 5 * 32 + 32 + 32 + 96
# Worst execution gas of a reading: new register and anchor slots (22.1k each), the meter's
# two words, ecrecover and the event; measured 69.4k with an anchor (docs/metering.md).
READING_GAS = ItemGas(worst=90_000, calldata_bytes=CALLDATA_BYTES_PER_READING,
                      initial_guess=60_000.0)


@dataclass(slots=True)
class ReadingItem:
    """One stream entry's reading on its way to the chain.

    ``retried``: the entry was delivered before this run read it (a predecessor may have
    sent it), so the contract's duplicate skip means settled, not a duplicate upload.
    """

    entry_id: str
    signed: SignedReading
    payload: str
    entered_ms: int
    retried: bool = False
    reverts: int = 0
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> str:
        return self.entry_id

    @property
    def identity(self) -> tuple[bytes, int, bytes]:
        """Same meter, time and signed content: the same reading."""
        r = self.signed.reading
        return r.meter, r.time, r.struct_hash()


class ReadingCodec:
    """``submitReadings(Reading[])`` calldata, its argument type taken from the ABI."""

    item_gas = READING_GAS

    def __init__(self, abi: Any) -> None:
        self.abi = SettlementABI(abi)
        try:
            self.abi.function("submitReadings")
        except InterfaceError:
            raise IngestConfigError("The Settlement ABI has no submitReadings function; "
                                    "deploy the metering contract (pilotchain deploy --force)."
                                    ) from None

    def calldata(self, items: Sequence[ReadingItem]) -> bytes:
        return self.abi.submit_readings([item.signed for item in items])


@dataclass(frozen=True)
class Fates:
    """What the contract did with each reading of one batch, by position."""

    recorded: list[int]
    duplicates: list[int]
    refused: dict[int, int]  # position -> Refusal value


def fates(items: Sequence[ReadingItem], receipt: Receipt) -> Fates:
    """Each reading's fate from the batch's events. A refusal names its index; a stored
    reading's ReadingRecorded names its meter and time, taken by the first reading with
    them not refused; the rest were identical duplicates (which emit nothing)."""
    refused: dict[int, int] = {}
    stored: dict[tuple[bytes, int], int] = {}
    for entry in receipt.logs:
        event = event_of(entry)
        if event is READING_REFUSED:
            refusal = decode_as(event, entry).values
            refused[refusal["index"]] = refusal["reason"]
        elif event is READING_RECORDED:
            reading = decode_as(event, entry).values
            key = (reading["meter"], reading["time"])
            stored[key] = stored.get(key, 0) + 1
    recorded, duplicates = [], []
    for index, item in enumerate(items):
        if index in refused:
            continue
        key = (item.signed.reading.meter, item.signed.reading.time)
        if stored.get(key, 0) > 0:
            stored[key] -= 1
            recorded.append(index)
        else:
            duplicates.append(index)
    return Fates(recorded, duplicates, refused)
