"""The grid operator's work on the Settlement contract: meters, rates, billing periods.

``pilotchain meters|rates|periods|slots ...`` (:mod:`pilotchain.operator_cli`), the portal's
back office and the slot closer call these with typed values; the forms of what an operator
types are checked before, in :mod:`pilotchain.operator_input`. Chain state is checked before
anything is sent: every transaction is first run as an ``eth_call`` from the sending account,
and a revert is turned into a sentence from the contract's custom error, so a refused command
sends nothing. Calldata and reads come from :mod:`pilotchain.settlement`.

Ids are shown as ``operator``, a uuid or ``0x`` and 64 hex digits, times as ISO-8601 UTC,
energy in kWh and money in euro cents as exact decimals: the contract's integers are those
values times 10**18.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError
from web3.types import LogReceipt, TxReceipt

from pilotchain.chain import Sender, call, connect, contract_logs, wait_for_receipt
from pilotchain.config import ChainSettings
from pilotchain.contract import Deployment, load_deployment, revert_data
from pilotchain.errors import Phrase, PilotChainError
from pilotchain.events import SLOT_BALANCED, TRADE_SETTLED, decode_as, event_of
from pilotchain.keys import KeyStore
from pilotchain.metering import OPERATOR, Rates
from pilotchain.settlement import Read, Revert, Settlement, SettlementABI

T = TypeVar("T")

SCALE = 10**18  # energy is kWh * 10**18, money euro cents * 10**18
ACTIVE = 2**64 - 1  # a meter's activeUntil while it is active
ZERO_ID = bytes(32)
OPERATOR_NAME = "operator"
# Blocks per eth_getLogs request when scanning the contract's history.
LOG_CHUNK = 50_000


class OperatorError(PilotChainError):
    """An operator command cannot be carried out; the message says why and what to do."""


# --- showing values ---------------------------------------------------------------------


def format_id(value: bytes) -> str:
    """An id as it is written on the command line: ``operator``, a uuid, or 0x hex."""
    value = bytes(value)
    if value == OPERATOR:
        return OPERATOR_NAME
    if value[:16] == bytes(16) and value != ZERO_ID:
        return str(uuid.UUID(bytes=value[16:]))
    return "0x" + value.hex()


def format_time(seconds: int) -> str:
    """Unix seconds as ISO-8601 UTC."""
    if seconds >= ACTIVE:
        return "open end"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def units(raw: int) -> str:
    """A contract amount (x 10**18) as an exact decimal in kWh or euro cents."""
    sign = "-" if raw < 0 else ""
    whole, fraction = divmod(abs(raw), SCALE)
    decimals = f"{fraction:018d}".rstrip("0")
    return f"{sign}{whole}.{decimals}" if decimals else f"{sign}{whole}"


# --- the contract, as the operator sees it ----------------------------------------------


@dataclass
class SettlementClient:
    """The deployed Settlement, read through ``url`` and written with one account's key."""

    w3: Web3
    url: str
    deployment: Deployment
    contract: Settlement
    unlock: Callable[[], LocalAccount]
    _sender: Sender | None = field(default=None, repr=False)
    _slot_seconds: int | None = field(default=None, repr=False)

    @classmethod
    def open(cls, settings: ChainSettings, key_role: str = "operator") -> SettlementClient:
        """The deployment ``settings`` record; ``key_role``'s key is unlocked when first
        needed (scrypt takes half a second)."""
        url = settings.rpc_url
        deployment = load_deployment(settings.deployment_file, chain_id=settings.chain_id)
        w3 = connect(url)
        code = call(url, "Looking up the Settlement contract",
                    lambda: w3.eth.get_code(deployment.address))
        if not code:
            raise OperatorError(
                f"No Settlement contract is at {deployment.address} on the chain at {url}; "
                f"the record {settings.deployment_file} belongs to another chain. Run "
                "`pilotchain deploy`.")
        role = KeyStore(settings.keys_dir).role(key_role)
        return cls(w3, url, deployment, Settlement.at(w3, url, deployment), role.unlock)

    @property
    def sender(self) -> Sender:
        if self._sender is None:
            self._sender = Sender(self.w3, self.unlock(), url=self.url)
        return self._sender

    @property
    def abi(self) -> SettlementABI:
        return self.contract.abi

    def view(self, what: Read[T]) -> T:
        """A view function's result."""
        return call(self.url, what.action, lambda: self.contract.call(what))

    def slot_seconds(self) -> int:
        if self._slot_seconds is None:
            self._slot_seconds = self.view(self.abi.slot_seconds())
        return self._slot_seconds

    def forget_slot_seconds(self) -> None:
        """After the slot length changed: read it again when next asked."""
        self._slot_seconds = None

    def check_boundary(self, seconds: int, what: str) -> int:
        """``seconds`` if it is a slot boundary, else a sentence naming the nearest ones."""
        length = self.slot_seconds()
        if seconds % length:
            before = seconds // length * length
            raise OperatorError(
                f"{what} {format_time(seconds)} is not on a slot boundary (slots are "
                f"{length} s); use {format_time(before)} or {format_time(before + length)}.")
        return seconds

    def transact(self, admin_call: AdminCall) -> TxReceipt:
        """Send ``admin_call`` once an eth_call of it passes (see :func:`check_call`); the
        mined receipt. A refused call sends nothing."""
        data = check_call(self.contract, self.sender.address, admin_call)
        tx_hash = self.sender.send({"to": self.contract.address, "data": data})
        receipt = wait_for_receipt(self.w3, tx_hash)
        if receipt["status"] != 1:
            raise OperatorError(f"{admin_call.action} failed: transaction "
                                f"{tx_hash.to_0x_hex()} reverted in its block although the "
                                "check before sending passed; the chain changed meanwhile, so "
                                "try again.")
        return receipt

    def logs(self, topics: Sequence[bytes], from_block: int, to_block: int) -> list[LogReceipt]:
        """The contract's logs with any of ``topics`` first, in chain order."""
        found: list[LogReceipt] = []
        for page in contract_logs(self.w3, self.url, self.contract.address,
                                  max(from_block, self.deployment.block_number), to_block,
                                  topics=topics, page_blocks=LOG_CHUNK):
            found += page
        return found

    def read_all(self, reads: Sequence[Read[T]]) -> list[T]:
        """Each read's value, asked in JSON-RPC batches."""
        if not reads:
            return []
        return self.contract.read_all(reads, reads[0].action)


@dataclass(frozen=True)
class AdminCall:
    """One transaction of the contract's admin: what it does (the start of a sentence), the
    function and its arguments. ``pilotchain`` commands send it with the operator key; the
    portal hands its calldata to the operator's own wallet."""

    action: str
    name: str
    args: tuple[Any, ...]

    def data(self, abi: SettlementABI) -> HexBytes:
        return HexBytes(abi.encode(self.name, *self.args))


def check_call(contract: Settlement, sender: str, admin_call: AdminCall) -> HexBytes:
    """The calldata of ``admin_call`` once an eth_call of it from ``sender`` passes.

    A revert is the contract refusing: it becomes a sentence (OperatorError)."""
    data = admin_call.data(contract.abi)
    try:
        call(contract.url, admin_call.action, lambda: contract.check(data, sender))
    except ContractLogicError as error:
        reason = contract.abi.decode_revert(revert_data(error))
        raise OperatorError("{action} refused: {reason}", action=admin_call.action,
                            reason=refusal(reason)) from None
    return data


def refusal(revert: Revert) -> Phrase:
    """The contract's custom error as a clause for the operator (a Phrase: the portal shows
    it in the operator's language)."""
    a = revert.args
    sentences: dict[str, Callable[[], Phrase]] = {
        "UnknownMeter": lambda: Phrase("no meter {meter} is registered.",
                                       meter=format_id(a["meter"])),
        "MeterAlreadyRegistered": lambda: Phrase(
            "the meter {meter} is already registered; a meter id is used once.",
            meter=format_id(a["meter"])),
        "MeterStillActive": lambda: Phrase(
            "participant {participant} still has the active meter {meter}; use `pilotchain "
            "meters replace` to swap it.", participant=format_id(a["participant"]),
            meter=format_id(a["meter"])),
        "MeterNotActive": lambda: Phrase(
            "the meter {meter} has already been deactivated or replaced.",
            meter=format_id(a["meter"])),
        "MeterEndTooEarly": lambda: Phrase(
            "the meter {meter} cannot end before {earliest} (its start or its newest "
            "reading).", meter=format_id(a["meter"]), earliest=format_time(a["earliest"])),
        "NotOnSlotBoundary": lambda: Phrase("{time} is not on a slot boundary.",
                                            time=format_time(a["time"])),
        "RatesNotAfter": lambda: Phrase(
            "rates can only change from {earliest} on (after the previous change and the "
            "newest closed slot), not from {start}.", earliest=format_time(a["earliest"]),
            start=format_time(a["fromSlot"])),
        "PeriodNotAfter": lambda: Phrase(
            "the previous period already ends at {previous}; the next must end later than "
            "that, not at {end}.", previous=format_time(a["previousEnd"]),
            end=format_time(a["endSlot"])),
        "PeriodNotOver": lambda: Phrase("a period cannot end in the future ({end}).",
                                        end=format_time(a["endSlot"])),
        "UnknownPeriod": lambda: Phrase("there is no closed period {period}.",
                                        period=a["period"]),
        "AlreadyPaid": lambda: Phrase(
            "the statement of participant {participant} for period {period} is already "
            "marked paid.", participant=format_id(a["participant"]), period=a["period"]),
        "SlotLengthFixed": lambda: Phrase(
            "the slot length is fixed once the first meter or rates are set."),
        "InvalidSlotLength": lambda: Phrase("a slot cannot be 0 s long."),
        "ZeroId": lambda: Phrase("an id cannot be zero."),
        "ZeroAddress": lambda: Phrase("an address cannot be zero."),
        "ZeroParticipant": lambda: Phrase("a participant or home area cannot be zero."),
        "SlotNotDue": lambda: Phrase("slot {index} of the batch is not due until {due}.",
                                     index=a["index"], due=format_time(a["dueAt"])),
        "NotMetered": lambda: Phrase("participant {participant} has no meter.",
                                     participant=format_id(a["participant"])),
        "InvalidSlot": lambda: Phrase("{slot} is not the start of a slot.",
                                      slot=format_time(a["slot"])),
        "ParticipantNotRegistered": lambda: Phrase(
            "participant {participant} has no registered wallet.",
            participant=format_id(a["participant"])),
        "WalletAlreadyRegistered": lambda: Phrase(
            "the wallet {wallet} is already registered to participant {participant}.",
            wallet=a["wallet"], participant=format_id(a["participant"])),
        "AccessControlUnauthorizedAccount": lambda: Phrase(
            "the account {account} is not the Settlement's admin; operator commands sign "
            "with the operator key that deployed it (KEYS_DIR/operator).",
            account=a["account"]),
    }
    sentence = sentences.get(revert.name)
    return sentence() if sentence else Phrase(
        "the Settlement contract reverted with {revert}.", revert=str(revert))


# --- participants' wallets ---------------------------------------------------------------


def register_participant_call(participant: bytes, wallet: str) -> AdminCall:
    """``registerParticipant``: ``wallet`` signs in as ``participant`` (moving the link if
    the participant had another wallet)."""
    return AdminCall(Phrase("Registering the wallet of {participant}",
                            participant=format_id(participant)),
                     "registerParticipant", (participant, Web3.to_checksum_address(wallet)))


def unregister_participant_call(participant: bytes) -> AdminCall:
    """``unregisterParticipant``: the participant's wallet no longer signs in as it."""
    return AdminCall(Phrase("Unregistering the wallet of {participant}",
                            participant=format_id(participant)),
                     "unregisterParticipant", (participant,))


# --- meters -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MeterInfo:
    """A meter's registration and newest reading, as ``meterOf`` gives them."""

    meter: bytes
    participant: bytes
    signer: str
    home_area: bytes
    active_from: int
    active_until: int
    last_reading: int | None
    last_import_wh: int
    last_export_wh: int

    def describe(self) -> str:
        newest = (f"newest reading {format_time(self.last_reading)} (import "
                  f"{self.last_import_wh} Wh, export {self.last_export_wh} Wh)"
                  if self.last_reading is not None else "no reading yet")
        state = ("active" if self.active_until == ACTIVE
                 else f"ended {format_time(self.active_until)}")
        return (f"meter {format_id(self.meter)}: participant {format_id(self.participant)}, "
                f"home area {format_id(self.home_area)}, signer {self.signer}, from "
                f"{format_time(self.active_from)}, {state}; {newest}")


def meter_info(client: SettlementClient, meter: bytes) -> MeterInfo:
    """The registration of ``meter``; a sentence if it is not registered."""
    record = client.view(client.abi.meter_of(meter))
    if int(record.signer, 16) == 0:
        raise OperatorError(f"No meter {format_id(meter)} is registered in Settlement "
                            f"{client.contract.address}.")
    home_area = client.view(client.abi.home_area_of(record.participant))
    return MeterInfo(meter, record.participant, record.signer, home_area, record.active_from,
                     record.active_until, record.last_time if record.has_readings else None,
                     record.last_import_wh, record.last_export_wh)


def meters_of(client: SettlementClient, participant: bytes) -> list[MeterInfo]:
    """Every meter ``participant`` has had, oldest first."""
    return [meter_info(client, bytes(meter)) for meter in client.view(
        client.abi.meters_of(participant))]


def register_meter(client: SettlementClient, meter: bytes, signer: str, participant: bytes,
                   home_area: bytes | None = None) -> MeterInfo:
    """Register ``meter`` (signing key ``signer``) for ``participant``; a house's home area
    is its own id, the default."""
    client.transact(register_meter_call(meter, signer, participant, home_area))
    return meter_info(client, meter)


def register_meter_call(meter: bytes, signer: str, participant: bytes,
                        home_area: bytes | None = None) -> AdminCall:
    """``registerMeter``; a house's home area is its own id, the default."""
    return AdminCall(Phrase("Registering meter {meter}", meter=format_id(meter)),
                     "registerMeter",
                     (meter, signer, participant, home_area or participant))


def replace_meter(client: SettlementClient, old: bytes, new: bytes, signer: str, at: int
                  ) -> MeterInfo:
    """End ``old`` at slot boundary ``at`` and start ``new`` there."""
    meter_info(client, old)
    client.check_boundary(at, "The replacement time")
    client.transact(AdminCall(f"Replacing meter {format_id(old)}", "replaceMeter",
                              (old, new, signer, at)))
    return meter_info(client, new)


def deactivate_meter(client: SettlementClient, meter: bytes, at: int) -> MeterInfo:
    """End ``meter`` at slot boundary ``at``."""
    meter_info(client, meter)
    client.check_boundary(at, "The end time")
    client.transact(deactivate_meter_call(meter, at))
    return meter_info(client, meter)


def deactivate_meter_call(meter: bytes, at: int) -> AdminCall:
    """``deactivateMeter``: the meter measures nothing after slot boundary ``at``."""
    return AdminCall(Phrase("Deactivating meter {meter}", meter=format_id(meter)),
                     "deactivateMeter", (meter, at))


# --- rates ------------------------------------------------------------------------------


def set_rates(client: SettlementClient, rates: Rates) -> Rates:
    """Append a rates change from ``rates.from_slot`` on."""
    client.check_boundary(rates.from_slot, "The rates' start")
    client.transact(AdminCall("Setting the rates", "setRates", (
        rates.from_slot, rates.shortfall, rates.grid_supply, rates.feed_in)))
    return rates


@dataclass(frozen=True)
class SlotTiming:
    """How long a slot is and how long after its end it may be closed, in seconds."""

    length: int
    close_delay: int

    def describe(self) -> str:
        return (f"slots of {self.length} s, each closed {self.close_delay} s after its end "
                "at the earliest")


def slot_timing(client: SettlementClient) -> SlotTiming:
    return SlotTiming(client.view(client.abi.slot_seconds()),
                      client.view(client.abi.close_delay()))


def set_slot_timing(client: SettlementClient, length: int | None,
                    close_delay: int | None) -> SlotTiming:
    """Change the slot length (only before the first meter or rates) and the close delay."""
    if length is not None:
        client.transact(AdminCall("Setting the slot length", "setSlotSeconds", (length,)))
        client.forget_slot_seconds()
    if close_delay is not None:
        client.transact(AdminCall("Setting the close delay", "setCloseDelay",
                                  (close_delay,)))
    return slot_timing(client)


def rates_history(client: SettlementClient) -> list[Rates]:
    """Every rates change, oldest first."""
    return client.view(client.abi.rates_history())


def describe_rates(rates: Rates) -> str:
    return (f"from {format_time(rates.from_slot)}: shortfall {units(rates.shortfall)}, "
            f"grid supply {units(rates.grid_supply)}, feed-in {units(rates.feed_in)} ct/kWh")


# --- billing periods --------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """One participant's statement of a closed period, in the contract's integers."""

    participant: bytes
    energy_sold: int
    energy_bought: int
    money_receivable: int
    money_payable: int
    balancing_charges: int
    balancing_credits: int
    net: int
    paid: bool

    def is_empty(self) -> bool:
        return not (self.energy_sold or self.energy_bought or self.money_receivable
                    or self.money_payable or self.balancing_charges
                    or self.balancing_credits or self.paid)


def period_count(client: SettlementClient) -> int:
    return client.view(client.abi.period_count())


def check_period(client: SettlementClient, period: int) -> int:
    """``period``'s end slot; a sentence if it is not closed."""
    count = period_count(client)
    if not 1 <= period <= count:
        closed = f"periods 1 to {count} are closed" if count else "no period is closed yet"
        raise OperatorError(f"There is no closed period {period}: {closed}.")
    return client.view(client.abi.period_end(period))


def close_period(client: SettlementClient, end: int) -> tuple[int, int]:
    """Close the next period at slot boundary ``end``; its number and the block."""
    client.check_boundary(end, "The period's end")
    receipt = client.transact(close_period_call(end))
    return period_count(client), int(receipt["blockNumber"])


def close_period_call(end: int) -> AdminCall:
    """``closePeriod``: the next billing period ends at slot boundary ``end``."""
    return AdminCall(Phrase("Closing the period"), "closePeriod", (end,))


def billed_participants(client: SettlementClient) -> list[bytes]:
    """Every participant that ever had a trade or a balanced slot (and the grid operator,
    once any slot was balanced), in order of first appearance."""
    head = call(client.url, "Reading the head", lambda: client.w3.eth.block_number)
    seen: dict[bytes, None] = {}
    for log in client.logs([TRADE_SETTLED.topic, SLOT_BALANCED.topic], 0, head):
        if event_of(log) is TRADE_SETTLED:
            trade = decode_as(TRADE_SETTLED, log).values
            seen.update(dict.fromkeys((trade["seller"], trade["buyer"])))
        else:
            balanced = decode_as(SLOT_BALANCED, log).values
            seen.update(dict.fromkeys((balanced["participant"], OPERATOR)))
    return list(seen)


def statements(client: SettlementClient, period: int) -> list[Statement]:
    """The non-empty statements of closed period ``period``."""
    check_period(client, period)
    participants = billed_participants(client)
    values = client.read_all([client.abi.statement_of(period, participant)
                              for participant in participants])
    found = [Statement(participant, *value) for participant, value in zip(participants, values,
                                                                          strict=True)]
    return [statement for statement in found if not statement.is_empty()]


def mark_paid(client: SettlementClient, period: int, participant: bytes) -> None:
    """Mark ``participant``'s statement of ``period`` paid."""
    check_period(client, period)
    client.transact(AdminCall(f"Marking period {period} paid for {format_id(participant)}",
                              "markPaid", (period, participant)))
