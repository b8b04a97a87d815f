"""The Settlement contract's interface: every function the project calls, as calldata and
as a decoded answer, taken from the compiled ABI (``build/contracts/Settlement.abi.json``).

This is the one module that knows selectors and argument types: nothing else builds a
selector, encodes arguments or scans the ABI (``tests/test_contract_interface.py`` holds the
rest of the code to that). A function the project calls but the ABI lacks is refused with a
sentence when it is first asked for, so an ABI of another contract fails at start, not in
the middle of a batch.

Encoding goes straight through eth_abi with each function's selector and types read once:
web3's contract layer costs ten times the node's own time per call, and the bridge asks
``isRecorded`` of thousands of trades when it recovers. Reads are :class:`Read` values (the
calldata and how the answer becomes a typed value), so a caller can send one eth_call or
many in a JSON-RPC batch, at the head or at a fixed block (the audit's).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar, cast

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_typing import ABIError, ABIFunction, ChecksumAddress
from eth_utils.abi import (
    collapse_if_tuple,
    function_abi_to_4byte_selector,
)
from hexbytes import HexBytes
from web3 import Web3
from web3.types import BlockIdentifier, TxParams

from pilotchain.chain import batch_call, read
from pilotchain.contract import ContractError, Deployment, load_abi_file
from pilotchain.metering import BalancingTotals, Rates, SignedReading
from pilotchain.trades import Bill, TradeRecord, uuid_to_bytes32

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
Block = int | str  # a block number or a tag such as "latest"

# eth_calls per JSON-RPC batch: small enough for any node.
READ_BATCH = 500
# The roles a service account must hold, read from the contract by name.
ROLES = ("RECORDER_ROLE", "READER_ROLE")
DEFAULT_ADMIN_ROLE = bytes(32)  # OpenZeppelin AccessControl's admin role

# Every function of Settlement the project calls or sends, by what uses it.
TRANSACTIONS = (
    "recordTrades",  # the bridge
    "submitReadings",  # the meter ingest
    "closeSlots",  # the slot closer and `pilotchain slots close`
    "registerParticipant", "unregisterParticipant", "registerMeter", "replaceMeter",
    "deactivateMeter", "setRates", "setSlotSeconds", "setCloseDelay", "closePeriod",
    "markPaid",  # the operator's commands and the portal's back office
    "grantRole",  # deployment: the service accounts' roles
)
READS = (
    "isRecorded", "recordedIn", "billOf", "balancingOf", "statementOf", "meterOf",
    "metersOf", "homeAreaOf", "slotOf", "slotSeconds", "closeDelay", "ratesHistory",
    "periodCount", "periodEnd", "participantOf", "hasRole", *ROLES,
)
USED = (*TRANSACTIONS, *READS)

StatementValues = tuple[int, int, int, int, int, int, int, bool]


class InterfaceError(ContractError):
    """The ABI lacks a function the project calls, or an answer does not decode."""


class MeterRecord(NamedTuple):
    """``meterOf``: a meter's registration and newest registers (zero signer: unknown)."""

    signer: ChecksumAddress
    last_time: int
    has_readings: bool
    participant: bytes
    active_from: int
    active_until: int
    last_import_wh: int
    last_export_wh: int


class SlotRecord(NamedTuple):
    """``slotOf``: a metered participant's slot (a ``SlotStatus``) and its boundary energy."""

    status: int
    sold: int
    bought: int


@dataclass(frozen=True)
class Function:
    """One function of the ABI: its selector and its argument and answer types."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    selector: bytes

    @property
    def signature(self) -> str:
        return f"{self.name}({','.join(self.inputs)})"

    def encode(self, *args: Any) -> bytes:
        """The calldata of a call with ``args``."""
        return self.selector + abi_encode(self.inputs, args)

    def decode(self, answer: bytes) -> tuple[Any, ...]:
        """The answer's values, one per output (a struct is one tuple)."""
        try:
            return tuple(abi_decode(self.outputs, answer))
        except DecodingError as error:
            raise InterfaceError(f"The answer of {self.name} does not decode as "
                                 f"({','.join(self.outputs)}): {error}.") from None


@dataclass(frozen=True)
class Read(Generic[T_co]):
    """One view call: its calldata, and how its answer becomes a value."""

    function: Function
    data: bytes
    convert: Callable[[tuple[Any, ...]], T_co]

    @property
    def action(self) -> str:
        """The start of a sentence about this read failing."""
        return f"Reading {self.function.name}"

    def decode(self, answer: bytes | str) -> T_co:
        """The value of a raw answer (bytes, or hex as a JSON-RPC batch returns it)."""
        raw = bytes(HexBytes(answer)) if isinstance(answer, str) else bytes(answer)
        return self.convert(self.function.decode(raw))

    def request(self, to: str, block: Block = "latest") -> tuple[str, list[Any]]:
        """The ``eth_call`` request of a JSON-RPC batch."""
        return ("eth_call", [{"to": to, "data": "0x" + self.data.hex()}, _block(block)])


@dataclass(frozen=True)
class Revert:
    """A decoded revert: the error's name and its arguments by name (custom errors, Error,
    Panic); ``name`` is empty for data no error of the ABI matches."""

    name: str
    args: dict[str, Any]
    raw: bytes

    def __str__(self) -> str:
        if not self.name:
            return f"unknown revert 0x{self.raw.hex()}"
        shown = ", ".join(f"{key}={_show(value)}" for key, value in self.args.items())
        return f"{self.name}({shown})"


# Solidity's built-in reverts, which no ABI lists.
_BUILTIN_ERRORS = [
    {"type": "error", "name": "Error", "inputs": [{"name": "message", "type": "string"}]},
    {"type": "error", "name": "Panic", "inputs": [{"name": "code", "type": "uint256"}]},
]


@dataclass(frozen=True)
class _Error:
    name: str
    names: tuple[str, ...]
    types: tuple[str, ...]


def _first(values: tuple[Any, ...]) -> Any:
    return values[0]


class SettlementABI:
    """The compiled ABI's functions and errors, with typed calldata and reads for each one
    the project uses."""

    def __init__(self, abi: Sequence[dict[str, Any]]) -> None:
        self.abi = list(abi)
        # Settlement overloads nothing; were it to, the first entry would be the one used.
        self._entries: dict[str, dict[str, Any]] = {}
        for entry in self.abi:
            if entry.get("type") == "function":
                self._entries.setdefault(entry["name"], entry)
        # Selectors are computed when a function is first asked for (a keccak each), so
        # wrapping an ABI a service already holds costs next to nothing.
        self._functions: dict[str, Function] = {}
        self._errors: dict[bytes, _Error] | None = None

    @property
    def names(self) -> set[str]:
        """The names of the ABI's functions."""
        return set(self._entries)

    @classmethod
    def load(cls, path: Path) -> SettlementABI:
        """The ABI file at ``path``, read once while the file is unchanged."""
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            stamp = 0  # load_abi_file says what is wrong with it
        return _load(path.resolve(), stamp)

    @classmethod
    def of(cls, deployment: Deployment) -> SettlementABI:
        """The ABI a deployment record points at."""
        return cls.load(deployment.abi_path)

    def function(self, name: str) -> Function:
        """The function ``name`` of the ABI; a sentence if the ABI lacks it."""
        found = self._functions.get(name)
        if found is not None:
            return found
        entry = self._entries.get(name)
        if entry is None:
            raise InterfaceError(f"The Settlement ABI has no {name} function; is it the "
                                 "right ABI? Compile and deploy again (pilotchain deploy "
                                 "--force).")
        found = Function(name, _types(entry["inputs"]), _types(entry.get("outputs", [])),
                         function_abi_to_4byte_selector(cast(ABIFunction, entry)))
        self._functions[name] = found
        return found

    def encode(self, name: str, *args: Any) -> bytes:
        """The calldata of ``name(*args)``: for callers that pick the function by name (the
        operator's AdminCall); the typed methods below are for everything else."""
        return self.function(name).encode(*args)

    def read(self, name: str, convert: Callable[[tuple[Any, ...]], T], *args: Any) -> Read[T]:
        function = self.function(name)
        return Read(function, function.encode(*args), convert)

    # -- transactions -------------------------------------------------------------------

    def record_trades(self, records: Sequence[TradeRecord]) -> bytes:
        return self.encode("recordTrades", [record.as_contract_tuple() for record in records])

    def submit_readings(self, readings: Sequence[SignedReading]) -> bytes:
        return self.encode("submitReadings", [reading.as_contract_tuple()
                                              for reading in readings])

    def close_slots(self, participants: Sequence[bytes], slots: Sequence[int]) -> bytes:
        return self.encode("closeSlots", list(participants), list(slots))

    def register_participant(self, participant: bytes, wallet: str) -> bytes:
        return self.encode("registerParticipant", participant,
                           Web3.to_checksum_address(wallet))

    def unregister_participant(self, participant: bytes) -> bytes:
        return self.encode("unregisterParticipant", participant)

    def register_meter(self, meter: bytes, signer: str, participant: bytes,
                       home_area: bytes) -> bytes:
        return self.encode("registerMeter", meter, Web3.to_checksum_address(signer),
                           participant, home_area)

    def replace_meter(self, old: bytes, new: bytes, signer: str, at: int) -> bytes:
        return self.encode("replaceMeter", old, new, Web3.to_checksum_address(signer), at)

    def deactivate_meter(self, meter: bytes, at: int) -> bytes:
        return self.encode("deactivateMeter", meter, at)

    def set_rates(self, rates: Rates) -> bytes:
        return self.encode("setRates", rates.from_slot, rates.shortfall, rates.grid_supply,
                           rates.feed_in)

    def set_slot_seconds(self, seconds: int) -> bytes:
        return self.encode("setSlotSeconds", seconds)

    def set_close_delay(self, seconds: int) -> bytes:
        return self.encode("setCloseDelay", seconds)

    def close_period(self, end_slot: int) -> bytes:
        return self.encode("closePeriod", end_slot)

    def mark_paid(self, period: int, participant: bytes) -> bytes:
        return self.encode("markPaid", period, participant)

    def grant_role(self, role: bytes, account: str) -> bytes:
        return self.encode("grantRole", role, Web3.to_checksum_address(account))

    # -- reads --------------------------------------------------------------------------

    def is_recorded(self, trade_id: uuid.UUID) -> Read[bool]:
        return self.read("isRecorded", lambda v: bool(v[0]), uuid_to_bytes32(trade_id))

    def recorded_in(self, trade_id: uuid.UUID) -> Read[int]:
        """The block the trade was recorded in (0: not recorded)."""
        return self.read("recordedIn", lambda v: int(v[0]), uuid_to_bytes32(trade_id))

    def bill_of(self, participant: bytes) -> Read[Bill]:
        return self.read("billOf", lambda v: Bill(*v), participant)

    def balancing_of(self, participant: bytes) -> Read[BalancingTotals]:
        return self.read("balancingOf", lambda v: BalancingTotals(*v), participant)

    def statement_of(self, period: int, participant: bytes) -> Read[StatementValues]:
        """The statement's fields in the contract's order (sold, bought, receivable,
        payable, charges, credits, net, paid)."""
        return self.read("statementOf", _first, period, participant)

    def meter_of(self, meter: bytes) -> Read[MeterRecord]:
        def convert(values: tuple[Any, ...]) -> MeterRecord:
            signer, *rest = values[0]
            return MeterRecord(Web3.to_checksum_address(signer), *rest)
        return self.read("meterOf", convert, meter)

    def meters_of(self, participant: bytes) -> Read[list[bytes]]:
        """Every meter the participant has had, oldest first."""
        return self.read("metersOf", lambda v: [bytes(m) for m in v[0]], participant)

    def home_area_of(self, participant: bytes) -> Read[bytes]:
        return self.read("homeAreaOf", lambda v: bytes(v[0]), participant)

    def slot_of(self, participant: bytes, slot: int) -> Read[SlotRecord]:
        return self.read("slotOf", lambda v: SlotRecord(*v), participant, slot)

    def slot_seconds(self) -> Read[int]:
        return self.read("slotSeconds", lambda v: int(v[0]))

    def close_delay(self) -> Read[int]:
        return self.read("closeDelay", lambda v: int(v[0]))

    def rates_history(self) -> Read[list[Rates]]:
        """Every rates change, oldest first."""
        return self.read("ratesHistory", lambda v: [Rates(*entry) for entry in v[0]])

    def period_count(self) -> Read[int]:
        return self.read("periodCount", lambda v: int(v[0]))

    def period_end(self, period: int) -> Read[int]:
        return self.read("periodEnd", lambda v: int(v[0]), period)

    def participant_of(self, wallet: str) -> Read[bytes]:
        """The participant a wallet signs in as (32 zero bytes: none)."""
        return self.read("participantOf", lambda v: bytes(v[0]),
                         Web3.to_checksum_address(wallet))

    def has_role(self, role: bytes, account: str) -> Read[bool]:
        return self.read("hasRole", lambda v: bool(v[0]), role,
                         Web3.to_checksum_address(account))

    def role(self, name: str) -> Read[bytes]:
        """The id of the role ``name`` (one of :data:`ROLES`)."""
        if name not in ROLES:
            raise InterfaceError(f"{name!r} is not a role of Settlement's services; "
                                 f"they are {', '.join(ROLES)}.")
        return self.read(name, lambda v: bytes(v[0]))

    # -- reverts ------------------------------------------------------------------------

    def decode_revert(self, data: bytes | str) -> Revert:
        """Revert data decoded against the ABI's custom errors and Solidity's built-ins."""
        raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else bytes(data)
        if self._errors is None:
            self._errors = {}
            for entry in [*self.abi, *_BUILTIN_ERRORS]:
                if entry.get("type") == "error":
                    # An error's selector is made like a function's: name and argument types.
                    self._errors.setdefault(function_abi_to_4byte_selector(
                        cast(ABIError, entry)), _Error(
                        entry["name"], tuple(item["name"] for item in entry["inputs"]),
                        _types(entry["inputs"])))
        error = self._errors.get(raw[:4])
        if error is None:
            return Revert("", {}, raw)
        try:
            values = abi_decode(error.types, raw[4:])
        except DecodingError:
            return Revert("", {}, raw)
        args = {name: _typed(kind, value)
                for name, kind, value in zip(error.names, error.types, values, strict=True)}
        return Revert(error.name, args, raw)

    def describe_revert(self, data: bytes | str) -> str:
        """Revert data as ``Name(arg=value, ...)`` for messages."""
        return str(self.decode_revert(data))


@functools.lru_cache(maxsize=8)
def _load(path: Path, stamp: int) -> SettlementABI:
    """One parse per ABI file and version of it (``stamp``: its modification time)."""
    return SettlementABI(load_abi_file(path))


@dataclass(frozen=True)
class Settlement:
    """A deployed Settlement read through the node at ``url``."""

    w3: Web3
    url: str
    address: ChecksumAddress
    abi: SettlementABI

    @classmethod
    def at(cls, w3: Web3, url: str, deployment: Deployment) -> Settlement:
        return cls(w3, url, deployment.address, SettlementABI.of(deployment))

    def call(self, what: Read[T], *, block: Block = "latest") -> T:
        """One eth_call as web3 makes it: node failures and reverts reach the caller
        unwrapped, for :func:`pilotchain.chain.call` or ``read`` around it."""
        return eth_call(self.w3, self.address, what, block=block)

    def read(self, what: Read[T], *, block: Block = "latest") -> T:
        """One eth_call, node failures as ChainError sentences (a revert as it is)."""
        return read(self.url, what.action, lambda: self.call(what, block=block))

    def read_all(self, reads: Sequence[Read[T]], action: str, *,
                 block: Block = "latest") -> list[T]:
        """Each read's value, asked in JSON-RPC batches of :data:`READ_BATCH` (one round
        trip each). A revert in any of them raises NodeRefused, as batch_call does."""
        values: list[T] = []
        for start in range(0, len(reads), READ_BATCH):
            chunk = reads[start:start + READ_BATCH]
            answers = batch_call(self.w3, self.url, action,
                                 [what.request(self.address, block) for what in chunk])
            values += [what.decode(str(answer)) for what, answer in zip(chunk, answers,
                                                                           strict=True)]
        return values

    def check(self, data: bytes, sender: str) -> None:
        """Run a transaction's calldata as an eth_call from ``sender``; a revert raises
        ContractLogicError (its data: :meth:`SettlementABI.decode_revert`)."""
        request: TxParams = {"from": Web3.to_checksum_address(sender), "to": self.address,
                             "data": HexBytes(data)}
        self.w3.eth.call(request)


def eth_call(w3: Web3, address: str, what: Read[T], *, block: Block = "latest") -> T:
    """``what`` of the contract at ``address``, one eth_call; node failures and reverts reach
    the caller as web3 raises them."""
    request: TxParams = {"to": Web3.to_checksum_address(address), "data": HexBytes(what.data)}
    return what.decode(bytes(w3.eth.call(request, cast(BlockIdentifier, block))))


def _types(items: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """ABI types as eth_abi writes them (a struct as ``(type,...)``)."""
    return tuple(collapse_if_tuple(item) for item in items)


def _block(block: Block) -> str:
    return hex(block) if isinstance(block, int) else block


def _typed(abi_type: str, value: object) -> object:
    if abi_type == "address" and isinstance(value, str):
        return Web3.to_checksum_address(value)
    return value


def _show(value: object) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)
