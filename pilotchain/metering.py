"""Meter readings in the Settlement contract's format, and the reference balancing rules.

Pure (no web3 I/O) like :mod:`pilotchain.trades`: the ingest, the meter simulator and
``pilotchain audit`` share it, and the tests check the contract against it.

**Readings.** A meter reports its cumulative import and export registers in whole Wh
(OBIS 1.8.0 / 2.8.0) at a time in unix seconds, and signs them with its own secp256k1 key as
EIP-712 typed data::

    domain  EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)
            name "PilotChain Settlement", version "1", the chain id, the contract's address
    type    MeterReading(bytes32 meter,uint64 time,uint64 importWh,uint64 exportWh,
                         bytes32 minutesAnchor)
    digest  keccak256(0x19 0x01 || domainSeparator || hashStruct(reading))

so a reading is valid for one chain and one contract only. Only readings at slot boundaries
go on chain; each commits to the meter's minute readings since its previous on-chain reading
through ``minutesAnchor`` (see :func:`minutes_anchor`).

**Balancing** of a metered participant's slot compares the energy it traded across its meter
(trades in markets other than its home area) with the register differences at the slot's ends:
shortfall = sold - export, excess = import - bought, surplus = export - sold, unused = bought -
import (each at least 0). Shortfall, excess and surplus below one Wh (the registers'
resolution) count as 0, since gsy-e trades fractions of a Wh. Money is energy x rate / 10**18,
rounded down; the grid operator takes the other side of every charge and credit.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from itertools import pairwise
from typing import Any

import coincurve
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from pilotchain.errors import PilotChainError
from pilotchain.trades import TradeRecord

DOMAIN_NAME = "PilotChain Settlement"
DOMAIN_VERSION = "1"
READING_TYPE = (
    "MeterReading(bytes32 meter,uint64 time,uint64 importWh,uint64 exportWh,bytes32 minutesAnchor)"
)
DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
READING_TYPEHASH = keccak(text=READING_TYPE)
DOMAIN_TYPEHASH = keccak(text=DOMAIN_TYPE)
# One Wh in the contract's energy unit (kWh * 10**18).
WH = 10**15
# The grid operator's participant id, the counterparty of all balancing.
OPERATOR = keccak(text="pilotchain:grid-operator")
# How far a reading may lie ahead of the block's time (seconds).
FUTURE_TOLERANCE = 300
DEFAULT_SLOT_SECONDS = 900
MAX_REGISTER = 2**64 - 1
ZERO_ANCHOR = bytes(32)

_EIP712_TYPES: dict[str, list[dict[str, str]]] = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "MeterReading": [
        {"name": "meter", "type": "bytes32"},
        {"name": "time", "type": "uint64"},
        {"name": "importWh", "type": "uint64"},
        {"name": "exportWh", "type": "uint64"},
        {"name": "minutesAnchor", "type": "bytes32"},
    ],
}


class MeteringError(PilotChainError):
    """A reading or a balancing input does not fit the settlement format."""


class Refusal(IntEnum):
    """The contract's ``Refusal`` enum, in its order: why a reading was not stored."""

    NONE = 0
    DUPLICATE = 1
    UNKNOWN_METER = 2
    NOT_ON_SLOT_BOUNDARY = 3
    FUTURE_DATED = 4
    CONFLICTING = 5
    OUT_OF_ORDER = 6
    METER_INACTIVE = 7
    BAD_SIGNATURE = 8
    REGISTERS_BACKWARDS = 9


class SlotStatus(IntEnum):
    """The contract's ``SlotStatus`` enum."""

    OPEN = 0
    BALANCED = 1
    UNMETERED = 2


@dataclass(frozen=True)
class Domain:
    """Where a reading is valid: one chain, one Settlement contract."""

    chain_id: int
    contract: str

    def separator(self) -> bytes:
        """The EIP-712 domain separator, computed by hand (not through eth-account)."""
        return _domain_separator(self.chain_id, self.contract)


@functools.cache
def _domain_separator(chain_id: int, contract: str) -> bytes:
    # One per chain and contract; the ingest checks every reading against it.
    return keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                DOMAIN_TYPEHASH,
                keccak(text=DOMAIN_NAME),
                keccak(text=DOMAIN_VERSION),
                chain_id,
                to_checksum_address(contract),
            ],
        )
    )


@dataclass(frozen=True)
class MeterReading:
    """A meter's cumulative registers in Wh at ``time`` (unix seconds, UTC)."""

    meter: bytes
    time: int
    import_wh: int
    export_wh: int
    minutes_anchor: bytes = ZERO_ANCHOR

    def __post_init__(self) -> None:
        if len(self.meter) != 32 or len(self.minutes_anchor) != 32:
            raise MeteringError("A meter id and a minutes anchor are 32 bytes each.")
        for name in ("time", "import_wh", "export_wh"):
            value = getattr(self, name)
            valid = isinstance(value, int) and not isinstance(value, bool)
            if not valid or not 0 <= value <= MAX_REGISTER:
                raise MeteringError(f"A reading's {name} must be an integer in [0, 2**64), "
                                    f"not {value!r}.")

    def typed_data(self, domain: Domain) -> dict[str, Any]:
        """The full EIP-712 message, as ``eth_account.messages.encode_typed_data`` takes it."""
        return {
            "types": _EIP712_TYPES,
            "primaryType": "MeterReading",
            "domain": {
                "name": DOMAIN_NAME,
                "version": DOMAIN_VERSION,
                "chainId": domain.chain_id,
                "verifyingContract": to_checksum_address(domain.contract),
            },
            "message": {
                "meter": self.meter,
                "time": self.time,
                "importWh": self.import_wh,
                "exportWh": self.export_wh,
                "minutesAnchor": self.minutes_anchor,
            },
        }

    def struct_hash(self) -> bytes:
        """EIP-712 ``hashStruct``: keccak of the type hash and the five fields as words."""
        return keccak(
            abi_encode(
                ["bytes32", "bytes32", "uint64", "uint64", "uint64", "bytes32"],
                [READING_TYPEHASH, self.meter, self.time, self.import_wh, self.export_wh,
                 self.minutes_anchor],
            )
        )

    def digest(self, domain: Domain) -> bytes:
        """The 32 bytes the meter signs."""
        return keccak(b"\x19\x01" + domain.separator() + self.struct_hash())


@dataclass(frozen=True)
class SignedReading:
    """A reading and its 65-byte signature (r, s, v with v 27 or 28)."""

    reading: MeterReading
    signature: bytes

    def as_contract_tuple(self) -> tuple[bytes | int, ...]:
        """The contract's ``Reading`` struct, ready for ``submitReadings``."""
        r = self.reading
        return (r.meter, r.time, r.import_wh, r.export_wh, r.minutes_anchor, self.signature)

    def signer(self, domain: Domain) -> str:
        """The address that signed the reading for ``domain``."""
        digest, signature = self.reading.digest(domain), bytes(self.signature)
        try:
            # libsecp256k1 through coincurve, as eth-keys recovers, without eth-account's
            # objects around it: a sixth of the time, and the ingest checks every reading.
            public = coincurve.PublicKey.from_signature_and_message(
                signature[:64] + bytes([signature[64] - 27]), digest, hasher=None)
        except (ValueError, IndexError):
            # No key recovers (v not 27 or 28, r or s out of range): eth-account says why.
            recovered: str = Account._recover_hash(digest, signature=signature)
            return recovered
        return to_checksum_address(keccak(public.format(compressed=False)[1:])[-20:])


def sign_reading(reading: MeterReading, key: LocalAccount | bytes, domain: Domain) -> SignedReading:
    """Sign ``reading`` for ``domain`` with the meter's key, the way a meter does: its EIP-712
    digest (that of :meth:`MeterReading.typed_data`, which a wallet signs), signed by
    libsecp256k1 as eth-keys signs (RFC 6979, low s), with v 27 or 28."""
    secret = key.key if isinstance(key, LocalAccount) else key
    signed = coincurve.PrivateKey(bytes(secret)).sign_recoverable(reading.digest(domain),
                                                                   hasher=None)
    return SignedReading(reading, signed[:64] + bytes([signed[64] + 27]))


def minutes_anchor(minute_readings: Sequence[MeterReading], domain: Domain) -> bytes:
    """The anchor a boundary reading carries for the minute readings since the meter's
    previous on-chain reading (strictly after it, strictly before the boundary reading).

    Each minute reading is a ``MeterReading`` of the same meter with a zero anchor; the anchor
    is keccak256 over their EIP-712 digests concatenated in time order, or 32 zero bytes when
    there are none. Changing, dropping, adding or reordering a minute reading changes it.
    """
    if not minute_readings:
        return ZERO_ANCHOR
    meters = {reading.meter for reading in minute_readings}
    if len(meters) != 1:
        raise MeteringError("The minute readings of an anchor must all be of one meter.")
    times = [reading.time for reading in minute_readings]
    if any(later <= earlier for earlier, later in pairwise(times)):
        raise MeteringError("The minute readings of an anchor must be in strictly rising time.")
    if any(reading.minutes_anchor != ZERO_ANCHOR for reading in minute_readings):
        raise MeteringError("Minute readings carry a zero anchor; only boundary readings anchor.")
    return keccak(b"".join(reading.digest(domain) for reading in minute_readings))


def meter_id(value: uuid.UUID | str) -> bytes:
    """A meter id from a uuid, in the same bytes32 form as gsy-e ids."""
    as_uuid = value if isinstance(value, uuid.UUID) else uuid.UUID(value)
    return bytes(16) + as_uuid.bytes


def wh_to_energy(wh: int) -> int:
    """Whole Wh to the contract's energy unit (kWh * 10**18)."""
    return wh * WH


def energy_to_wh(energy: int) -> int:
    """The contract's energy unit to whole Wh, rounded down."""
    return energy // WH


# --- reference balancing ------------------------------------------------------------------


@dataclass(frozen=True)
class Rates:
    """Balancing rates from ``from_slot`` on, in euro cents per kWh * 10**18."""

    from_slot: int
    shortfall: int
    grid_supply: int
    feed_in: int = 0


@dataclass(frozen=True)
class SlotBalance:
    """One closed slot of a metered participant, energies scaled like trades."""

    participant: uuid.UUID
    slot: int
    status: SlotStatus
    sold: int
    bought: int
    import_energy: int = 0
    export_energy: int = 0
    shortfall: int = 0
    excess: int = 0
    surplus: int = 0
    unused: int = 0
    shortfall_charge: int = 0
    excess_charge: int = 0
    surplus_credit: int = 0

    @property
    def charges(self) -> int:
        return self.shortfall_charge + self.excess_charge


@dataclass(frozen=True)
class BalancingTotals:
    """Balancing money of one bill: charges owed and credits owed to it."""

    charges: int = 0
    credits: int = 0


def boundary_energy(
    records: Iterable[TradeRecord], home_areas: Mapping[uuid.UUID, uuid.UUID]
) -> dict[tuple[uuid.UUID, int], tuple[int, int]]:
    """(sold, bought) per (metered participant, slot) of the trades crossing its meter.

    A trade crosses a participant's meter when the participant is seller or buyer and the
    trade's market is not its home area. Trade ids seen before are skipped, like on chain.
    """
    totals: dict[tuple[uuid.UUID, int], list[int]] = {}
    seen: set[uuid.UUID] = set()
    for record in records:
        if record.trade_id in seen:
            continue
        seen.add(record.trade_id)
        for party, side in ((record.seller, 0), (record.buyer, 1)):
            home = home_areas.get(party)
            if home is not None and record.market != home:
                totals.setdefault((party, record.time_slot), [0, 0])[side] += record.energy
    return {key: (sold, bought) for key, (sold, bought) in totals.items()}


def rates_at(history: Sequence[Rates], slot: int) -> Rates:
    """The rates in force for ``slot``: the newest change at or before it (all 0 before any)."""
    applicable = [rates for rates in history if rates.from_slot <= slot]
    return max(applicable, key=lambda rates: rates.from_slot, default=Rates(0, 0, 0, 0))


def balance_slot(
    participant: uuid.UUID,
    slot: int,
    sold: int,
    bought: int,
    start: tuple[int, int] | None,
    end: tuple[int, int] | None,
    rates: Rates,
) -> SlotBalance:
    """One slot by the rules, from the (import Wh, export Wh) registers at its ends."""
    if start is None or end is None:
        return SlotBalance(participant, slot, SlotStatus.UNMETERED, sold, bought)
    imported = (end[0] - start[0]) * WH
    exported = (end[1] - start[1]) * WH
    shortfall = _at_least_one_wh(sold - exported)
    excess = _at_least_one_wh(imported - bought)
    surplus = _at_least_one_wh(exported - sold)
    return SlotBalance(
        participant=participant,
        slot=slot,
        status=SlotStatus.BALANCED,
        sold=sold,
        bought=bought,
        import_energy=imported,
        export_energy=exported,
        shortfall=shortfall,
        excess=excess,
        surplus=surplus,
        unused=max(0, bought - imported),
        shortfall_charge=shortfall * rates.shortfall // 10**18,
        excess_charge=excess * rates.grid_supply // 10**18,
        surplus_credit=surplus * rates.feed_in // 10**18,
    )


def _at_least_one_wh(deviation: int) -> int:
    return deviation if deviation >= WH else 0


def compute_balancing(
    records: Iterable[TradeRecord],
    home_areas: Mapping[uuid.UUID, uuid.UUID],
    registers: Mapping[uuid.UUID, Mapping[int, tuple[int, int]]],
    rates: Sequence[Rates],
    slots: Iterable[tuple[uuid.UUID, int]],
    slot_seconds: int = DEFAULT_SLOT_SECONDS,
) -> list[SlotBalance]:
    """Every slot in ``slots`` closed after all ``records`` were recorded.

    ``registers`` holds, per participant, the (import Wh, export Wh) its meter read at each
    boundary time.
    """
    energy = boundary_energy(records, home_areas)
    balances = []
    for participant, slot in slots:
        sold, bought = energy.get((participant, slot), (0, 0))
        readings = registers.get(participant, {})
        balances.append(balance_slot(participant, slot, sold, bought, readings.get(slot),
                                     readings.get(slot + slot_seconds), rates_at(rates, slot)))
    return balances


def balancing_totals(
    balances: Iterable[SlotBalance],
) -> tuple[dict[uuid.UUID, BalancingTotals], BalancingTotals]:
    """Each participant's balancing money and the grid operator's, its counterparty."""
    per_participant: dict[uuid.UUID, BalancingTotals] = {}
    operator = BalancingTotals()
    for balance in balances:
        current = per_participant.get(balance.participant, BalancingTotals())
        per_participant[balance.participant] = BalancingTotals(
            current.charges + balance.charges, current.credits + balance.surplus_credit
        )
        operator = BalancingTotals(operator.charges + balance.surplus_credit,
                                   operator.credits + balance.charges)
    return per_participant, operator


def matching_registers(
    energy: Mapping[tuple[uuid.UUID, int], tuple[int, int]],
    slots: Iterable[int],
    factors: Mapping[uuid.UUID, float] | None = None,
    slot_seconds: int = DEFAULT_SLOT_SECONDS,
) -> dict[uuid.UUID, dict[int, tuple[int, int]]]:
    """Boundary registers whose slot energy is the traded energy times a factor.

    Readings cover every slot from the first to the last of ``slots``. Per participant the
    registers start at 0 at the first slot's start; each slot adds
    import = bought x factor and export = sold x factor (factor 1 unless given). The
    registers are the cumulative energy rounded down to whole Wh, so a slot's measured
    energy differs from its target by less than one Wh.
    """
    given = sorted(set(slots))
    ordered = list(range(given[0], given[-1] + 1, slot_seconds)) if given else []
    participants = sorted({participant for participant, _ in energy})
    registers: dict[uuid.UUID, dict[int, tuple[int, int]]] = {}
    for participant in participants:
        factor = (factors or {}).get(participant, 1.0)
        cumulative_import = cumulative_export = 0
        readings = {ordered[0]: (0, 0)} if ordered else {}
        for slot in ordered:
            sold, bought = energy.get((participant, slot), (0, 0))
            cumulative_import += round(bought * factor)
            cumulative_export += round(sold * factor)
            readings[slot + slot_seconds] = (cumulative_import // WH, cumulative_export // WH)
        registers[participant] = readings
    return registers
