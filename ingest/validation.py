"""What the ingest checks before a reading goes on chain, and what the contract's refusals
mean, as sentences for the dead-letter stream.

Checked off chain (cheap, and no gas spent on a reading the contract must refuse): the meter
is registered (its key read from the contract and cached: a meter id's key never changes),
the signature recovers to that key for this chain and contract, the time lies on a slot
boundary (or it is a minute reading, kept off chain) and is not ahead of the clock. What
depends on the meter's stored readings (out of order, registers going backwards, a
conflicting reading) is left to the contract, which
refuses by event, not by revert: pre-checking it would need ``checkReading`` per reading
against a state that the readings in flight are about to change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from web3 import Web3

from pilotchain.chain import contract_logs, read
from pilotchain.events import METER_REGISTERED, decode_as
from pilotchain.metering import FUTURE_TOLERANCE, Domain, Refusal, SignedReading
from pilotchain.settlement import SettlementABI, eth_call

ZERO_ADDRESS = "0x" + "00" * 20
# Blocks of registrations read again each time (Clique reorganises a few blocks at most).
REORG_MARGIN = 64
# Blocks per eth_getLogs: the topic filter keeps the answer small (a year of 5 s blocks is
# about 130 requests, once, on the first unknown meter after a start).
LOG_PAGE = 50_000
# Meters remembered as unregistered (each for INGEST_UNKNOWN_METER_TTL) before expired ones
# are dropped.
MAX_UNKNOWN = 100_000


class MeterRegistry:
    """Each meter's signing address as the contract has it, cached.

    A registered meter's key is cached for good (the contract never changes a meter's
    signer); an unknown meter is asked again after ``unknown_ttl`` seconds, so a meter
    registered meanwhile is accepted soon.
    """

    def __init__(self, lookup: Callable[[bytes], str], unknown_ttl: float,
                 registrations: Callable[[], dict[bytes, str]] | None = None) -> None:
        self.lookup = lookup
        self.registrations = registrations
        self.unknown_ttl = unknown_ttl
        self._known: dict[bytes, str] = {}
        self._unknown: dict[bytes, float] = {}

    def signer(self, meter: bytes) -> str | None:
        """The meter's signing address, None if it is not registered."""
        known = self._known.get(meter)
        if known is not None:
            return known
        if self._recently_unknown(meter, time.monotonic()):
            return None
        return self._remember(meter, self.lookup(meter))

    def prefetch(self, meters: Iterable[bytes]) -> None:
        """Settle at once whether each meter of ``meters`` not cached is registered: the
        registrations since the last look come in one request, and a meter still not among
        them is unknown (asked again after the TTL).

        A page of readings for meters nobody registered (a flood, or a misconfigured
        database) then costs one request to the node instead of one per reading (which held
        the writer to about 100 readings a second), so it is dead-lettered in a moment
        instead of holding up the good readings behind it.
        """
        if self.registrations is None:
            return
        now = time.monotonic()
        wanted = [meter for meter in dict.fromkeys(meters)
                  if meter not in self._known and not self._recently_unknown(meter, now)]
        if not wanted:
            return
        for meter, signer in self.registrations().items():
            self._remember(meter, signer)
        for meter in wanted:
            if meter not in self._known:
                self._remember(meter, ZERO_ADDRESS)

    def _recently_unknown(self, meter: bytes, now: float) -> bool:
        asked = self._unknown.get(meter)
        return asked is not None and now - asked < self.unknown_ttl

    def _remember(self, meter: bytes, signer: str) -> str | None:
        if signer.lower() == ZERO_ADDRESS:
            self._unknown[meter] = time.monotonic()
            if len(self._unknown) > MAX_UNKNOWN:
                self._forget_expired()
            return None
        self._unknown.pop(meter, None)
        self._known[meter] = signer
        return signer

    def _forget_expired(self) -> None:
        """Unknown meters are remembered only for the TTL: a flood of made-up ids must not
        grow the writer's memory without bound."""
        now = time.monotonic()
        self._unknown = {meter: asked for meter, asked in self._unknown.items()
                         if now - asked < self.unknown_ttl}
        while len(self._unknown) > MAX_UNKNOWN:  # all fresh: drop the oldest
            del self._unknown[next(iter(self._unknown))]

    def knows_a_meter(self) -> bool:
        """Whether any registered meter has been seen (from then on the slot length is fixed)."""
        return bool(self._known)


def contract_lookup(contract: Any) -> Callable[[bytes], str]:
    """The registry lookup through ``meterOf`` (its first member is the signer)."""
    abi = SettlementABI(contract.abi)

    def lookup(meter: bytes) -> str:
        return eth_call(contract.w3, contract.address, abi.meter_of(meter)).signer
    return lookup


class Registrations:
    """The Settlement's ``MeterRegistered`` events, followed block by block: every
    registration since the last look, in one ``eth_getLogs`` (pages of blocks) however many
    meters are asked about."""

    def __init__(self, w3: Web3, url: str, contract: str, from_block: int) -> None:
        self.w3 = w3
        self.url = url
        self.contract = contract
        self.first_block = from_block
        self.next_block = from_block

    def new(self) -> dict[bytes, str]:
        """Meter id -> signer of each registration since the last call."""
        head = int(read(self.url, "Reading the block number", lambda: self.w3.eth.block_number))
        found: dict[bytes, str] = {}
        if head < self.next_block:
            return found
        # Looked at again: a registration a short reorganisation moved into a block already
        # read would otherwise be missed for good (seen twice, it is the same registration).
        first = max(self.first_block, self.next_block - REORG_MARGIN)
        for page in contract_logs(self.w3, self.url, self.contract, first, head,
                                  topics=[METER_REGISTERED.topic], page_blocks=LOG_PAGE):
            for log in page:
                values = decode_as(METER_REGISTERED, log).values
                found[bytes(values["meter"])] = Web3.to_checksum_address(values["signer"])
        self.next_block = head + 1
        return found


def off_chain_problem(signed: SignedReading, registry: MeterRegistry, domain: Domain,
                      slot_seconds: int, now: float) -> str | None:
    """Why the contract would refuse ``signed`` for reasons known without its stored
    readings, as a sentence; None if it may go on chain."""
    reading = signed.reading
    meter = "0x" + reading.meter.hex()
    signer = registry.signer(reading.meter)
    if signer is None:
        return f"Meter {meter} is not registered in Settlement {domain.contract} (UnknownMeter)."
    if reading.time % slot_seconds and not is_minute_reading(signed):
        return (f"The reading of meter {meter} at {reading.time} is not on a slot boundary "
                f"(a multiple of {slot_seconds} s) nor a minute reading (a whole minute, zero "
                "anchor); only boundary readings go on chain (NotOnSlotBoundary).")
    if reading.time > now + FUTURE_TOLERANCE:
        return (f"The reading of meter {meter} at {reading.time} lies {reading.time - int(now)} "
                f"s in the future, more than {FUTURE_TOLERANCE} s ahead (FutureDated).")
    recovered = signed.signer(domain)
    if recovered.lower() != signer.lower():
        return (f"The reading of meter {meter} at {reading.time} is signed by {recovered}, not "
                f"by the meter's key {signer}, for chain {domain.chain_id} and Settlement "
                f"{domain.contract} (BadSignature).")
    return None


def is_minute_reading(signed: SignedReading) -> bool:
    """A reading at a whole minute with a zero anchor: one of the minute readings a meter
    sends between slot boundaries. Checked like the others, then kept off chain (the next
    boundary reading anchors it)."""
    reading = signed.reading
    return reading.time % 60 == 0 and reading.minutes_anchor == bytes(32)


REFUSALS = {
    Refusal.DUPLICATE: "the same reading is already on chain",
    Refusal.UNKNOWN_METER: "the meter is not registered",
    Refusal.NOT_ON_SLOT_BOUNDARY: "its time is not on a slot boundary",
    Refusal.FUTURE_DATED: f"its time lies more than {FUTURE_TOLERANCE} s after the block's",
    Refusal.CONFLICTING: "another reading of this meter at this time is already on chain",
    Refusal.OUT_OF_ORDER: "it is not after the meter's newest reading on chain",
    Refusal.METER_INACTIVE: "the meter was not active at its time",
    Refusal.BAD_SIGNATURE: "it is not signed by the meter's key for this chain and contract",
    Refusal.REGISTERS_BACKWARDS: ("its import or export register is below the meter's newest "
                                  "reading on chain"),
}


def refusal_sentence(signed: SignedReading, reason: int) -> str:
    """The dead-letter reason for a ``ReadingRefused`` of the contract."""
    reading = signed.reading
    try:
        refusal = Refusal(reason)
        why, name = REFUSALS.get(refusal, "of an unknown reason"), _camel(refusal.name)
    except ValueError:
        why, name = "of an unknown reason", f"reason {reason}"
    return (f"Settlement refused the reading of meter 0x{reading.meter.hex()} at "
            f"{reading.time}: {why} ({name}).")


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
