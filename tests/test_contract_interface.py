"""The Settlement contract's one interface (:mod:`pilotchain.settlement`).

- Every function the project calls is in the compiled ABI and reachable through a typed
  method, whose calldata equals web3's own encoding of the same call.
- Every read, asked of a real Clique network one eth_call at a time, in a JSON-RPC batch and
  at a past block, gives what web3's contract layer gives.
- Nothing else in the code builds a selector, encodes by function name or scans the ABI.
"""

from __future__ import annotations

import ast
import os
import re
import uuid
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import pytest
from bridge_fixtures import send_data
from eth_account import Account
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError

from pilotchain.chain import Sender, connect
from pilotchain.contract import (
    CompiledContract,
    deploy_settlement,
    revert_data,
    settlement_contract,
)
from pilotchain.metering import WH, Domain, MeterReading, Rates, meter_id, sign_reading
from pilotchain.settings import PROJECT_ROOT
from pilotchain.settlement import (
    DEFAULT_ADMIN_ROLE,
    ROLES,
    USED,
    InterfaceError,
    Read,
    Settlement,
    SettlementABI,
)
from pilotchain.trades import TradeRecord, uuid_to_bytes32
from runner.localnet import LocalNetwork

SLOT = 30
CT = 10**18
A, B, MARKET = uuid.UUID(int=0xA), uuid.UUID(int=0xB), uuid.UUID(int=0xC)
PID_A, PID_B = uuid_to_bytes32(A), uuid_to_bytes32(B)
METER = meter_id(uuid.UUID(int=0x1))
SIGNER = Account.from_key(b"\x11" * 32)
WALLET = Account.from_key(b"\x22" * 32).address
TRADE = TradeRecord(uuid.UUID(int=0x7), MARKET, 900, A, B, A, B, 3 * WH, 40 * CT, 0)


def web3_contract(compiled: CompiledContract) -> Contract:
    """web3's contract layer over the same compiled ABI: the reference encoding."""
    return Web3().eth.contract(address=Web3.to_checksum_address("0x" + "42" * 20),
                               abi=compiled.abi)


def transactions(abi: SettlementABI, reading: Any) -> list[tuple[str, list[Any], bytes]]:
    """(function, web3 arguments, the module's calldata) of every transaction it encodes."""
    rates = Rates(900, 40 * CT, 30 * CT, 8 * CT)
    return [
        ("recordTrades", [[TRADE.as_contract_tuple()]], abi.record_trades([TRADE])),
        ("submitReadings", [[reading.as_contract_tuple()]], abi.submit_readings([reading])),
        ("closeSlots", [[PID_A, PID_B], [900, 1800]], abi.close_slots([PID_A, PID_B],
                                                                      [900, 1800])),
        ("registerParticipant", [PID_A, WALLET], abi.register_participant(PID_A, WALLET)),
        ("unregisterParticipant", [PID_A], abi.unregister_participant(PID_A)),
        ("registerMeter", [METER, SIGNER.address, PID_A, PID_B],
         abi.register_meter(METER, SIGNER.address, PID_A, PID_B)),
        ("replaceMeter", [METER, PID_B, SIGNER.address, 1800],
         abi.replace_meter(METER, PID_B, SIGNER.address, 1800)),
        ("deactivateMeter", [METER, 1800], abi.deactivate_meter(METER, 1800)),
        ("setRates", [900, 40 * CT, 30 * CT, 8 * CT], abi.set_rates(rates)),
        ("setSlotSeconds", [SLOT], abi.set_slot_seconds(SLOT)),
        ("setCloseDelay", [60], abi.set_close_delay(60)),
        ("closePeriod", [1800], abi.close_period(1800)),
        ("markPaid", [2, PID_A], abi.mark_paid(2, PID_A)),
        ("grantRole", [b"\x01" * 32, WALLET], abi.grant_role(b"\x01" * 32, WALLET)),
    ]


def reads(abi: SettlementABI) -> list[tuple[str, list[Any], Read[Any]]]:
    """(function, web3 arguments, the module's read) of every read it offers."""
    return [
        ("isRecorded", [uuid_to_bytes32(TRADE.trade_id)], abi.is_recorded(TRADE.trade_id)),
        ("recordedIn", [uuid_to_bytes32(TRADE.trade_id)], abi.recorded_in(TRADE.trade_id)),
        ("billOf", [PID_A], abi.bill_of(PID_A)),
        ("balancingOf", [PID_A], abi.balancing_of(PID_A)),
        ("statementOf", [1, PID_A], abi.statement_of(1, PID_A)),
        ("meterOf", [METER], abi.meter_of(METER)),
        ("metersOf", [PID_A], abi.meters_of(PID_A)),
        ("homeAreaOf", [PID_A], abi.home_area_of(PID_A)),
        ("slotOf", [PID_A, 900], abi.slot_of(PID_A, 900)),
        ("slotSeconds", [], abi.slot_seconds()),
        ("closeDelay", [], abi.close_delay()),
        ("ratesHistory", [], abi.rates_history()),
        ("periodCount", [], abi.period_count()),
        ("periodEnd", [1], abi.period_end(1)),
        ("participantOf", [WALLET], abi.participant_of(WALLET)),
        ("hasRole", [DEFAULT_ADMIN_ROLE, WALLET], abi.has_role(DEFAULT_ADMIN_ROLE, WALLET)),
        *((role, [], abi.role(role)) for role in ROLES),
    ]


def a_reading(deployment_address: str = "0x" + "42" * 20) -> Any:
    domain = Domain(8765, Web3.to_checksum_address(deployment_address))
    return sign_reading(MeterReading(METER, 900, 12, 3), SIGNER, domain)


def test_every_function_the_project_calls_is_in_the_compiled_abi(
        compiled: CompiledContract) -> None:
    abi = SettlementABI(compiled.abi)
    assert set(USED) <= abi.names
    for name in USED:
        function = abi.function(name)
        assert function.selector == Web3.keccak(text=function.signature)[:4], name


def test_the_modules_calldata_is_web3s_encoding_of_every_call(
        compiled: CompiledContract) -> None:
    """Each typed method gives byte for byte what web3's contract layer encodes, and
    together they reach every function the project uses."""
    abi, reference = SettlementABI(compiled.abi), web3_contract(compiled)
    sent = transactions(abi, a_reading())
    asked = reads(abi)
    for name, args, data in sent:
        assert data.hex() == reference.encode_abi(name, args=args).removeprefix("0x"), name
    for name, args, read in asked:
        assert read.function.name == name
        assert read.data.hex() == reference.encode_abi(name, args=args).removeprefix("0x"), name
    assert {name for name, _, _ in sent} | {name for name, _, _ in asked} == set(USED)


def test_a_function_the_abi_lacks_is_refused_with_a_sentence(
        compiled: CompiledContract) -> None:
    abi = SettlementABI([entry for entry in compiled.abi if entry.get("name") != "recordTrades"])
    with pytest.raises(InterfaceError, match="The Settlement ABI has no recordTrades function"):
        abi.record_trades([TRADE])
    with pytest.raises(InterfaceError, match="not a role"):
        SettlementABI(compiled.abi).role("DEFAULT_ADMIN_ROLE")


def test_the_abi_file_is_read_once_while_unchanged(compiled: CompiledContract,
                                                   tmp_path: Path) -> None:
    path = tmp_path / "Settlement.abi.json"
    path.write_text(compiled.abi_path.read_text())
    first = SettlementABI.load(path)
    assert SettlementABI.load(path) is first
    path.write_text(compiled.abi_path.read_text() + "\n")
    # A rewrite within the file system clock's tick may keep the time: move it on by hand.
    later = path.stat().st_mtime_ns + 1_000_000
    os.utime(path, ns=(later, later))
    assert SettlementABI.load(path) is not first


# --- reads on a real chain ----------------------------------------------------------------


def as_web3(value: Any) -> Any:
    """A typed value in the shape web3's contract layer returns."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # MeterRecord, SlotRecord
        return tuple(value)
    if isinstance(value, list):
        return [as_web3(item) for item in value]
    if hasattr(value, "__dataclass_fields__"):  # Bill, BalancingTotals, Rates
        return astuple(value)
    return value


def web3_shape(answer: Any) -> Any:
    """web3's answer with lists of fields as tuples, so both sides compare as values."""
    if isinstance(answer, list) and answer and not isinstance(answer[0], (bytes, list, tuple)):
        return tuple(answer)
    if isinstance(answer, list):
        return [web3_shape(item) for item in answer]
    return answer


@dataclass(frozen=True)
class Settled:
    """A Settlement with some of everything: the module's view, web3's, the block before the
    trade was recorded, and the admin's address."""

    contract: Settlement
    reference: Contract
    before: int
    admin: str


@pytest.fixture(scope="module")
def settled(chain: LocalNetwork, compiled: CompiledContract) -> Settled:
    """A fresh Settlement with a participant's wallet, a meter, a reading, rates, a trade and
    a closed period."""
    w3 = connect(chain.rpc_url)
    operator = chain.keys.role("operator").unlock()
    deployment = deploy_settlement(w3, operator, operator.address, reader=operator.address,
                                   compiled=compiled)
    contract = Settlement.at(w3, chain.rpc_url, deployment)
    abi, admin = contract.abi, Sender(w3, operator)

    domain = Domain(deployment.chain_id, deployment.address)
    head = int(w3.eth.get_block("latest")["timestamp"])
    # All the operator's, sent back to back: nonce order is chain order.
    receipts = send_data(
        w3, admin, contract.address,
        ("set_slot_seconds", abi.set_slot_seconds(SLOT)),
        ("set_close_delay", abi.set_close_delay(0)),
        ("register_participant", abi.register_participant(PID_A, WALLET)),
        ("register_meter", abi.register_meter(METER, SIGNER.address, PID_A, PID_A)),
        ("set_rates", abi.set_rates(Rates(0, 40 * CT, 30 * CT, 8 * CT))),
        ("submit_readings", abi.submit_readings(
            [sign_reading(MeterReading(METER, 900, 12, 3), SIGNER, domain)])),
        ("record_trades", abi.record_trades([TRADE])),
        ("close_period", abi.close_period(head // SLOT * SLOT)))
    before = int(receipts[-2]["blockNumber"]) - 1  # the block before the trade's
    return Settled(contract, settlement_contract(w3, deployment), before, operator.address)


def test_every_read_on_the_chain_gives_what_web3_gives(settled: Settled) -> None:
    contract, reference = settled.contract, settled.reference
    asked = reads(contract.abi)
    one_by_one = [contract.read(read) for _, _, read in asked]
    for (name, args, _), value in zip(asked, one_by_one, strict=True):
        expected = web3_shape(reference.get_function_by_name(name)(*args).call())
        assert as_web3(value) == expected, name
    assert contract.read_all([read for _, _, read in asked], "Reading everything") == one_by_one
    # The state the reads see is the one set up, not an empty contract's.
    assert contract.read(contract.abi.is_recorded(TRADE.trade_id)) is True
    assert contract.read(contract.abi.meter_of(METER)).signer == SIGNER.address
    assert contract.read(contract.abi.participant_of(WALLET)) == PID_A
    assert contract.read(contract.abi.period_count()) == 1


def test_reads_at_a_past_block_see_the_state_then(settled: Settled) -> None:
    contract, before = settled.contract, settled.before
    recorded = contract.abi.recorded_in(TRADE.trade_id)
    assert contract.read_all([recorded], "Reading recordedIn", block=before) == [0]
    assert contract.read(recorded, block=before) == 0
    assert contract.read(recorded) == before + 1


def test_a_refused_transaction_decodes_as_the_contracts_error(settled: Settled) -> None:
    contract = settled.contract
    again = contract.abi.register_meter(METER, SIGNER.address, PID_B, PID_B)
    with pytest.raises(ContractLogicError) as refused:
        contract.check(again, settled.admin)
    revert = contract.abi.decode_revert(revert_data(refused.value))
    assert (revert.name, revert.args) == ("MeterAlreadyRegistered", {"meter": METER})
    contract.check(contract.abi.set_close_delay(0), settled.admin)  # an allowed one passes


# --- nothing else builds calldata ---------------------------------------------------------

INTERFACE = "pilotchain/settlement.py"
PACKAGES = ("pilotchain", "bridge", "faucet", "ingest", "closer", "portal", "runner")
# Names that build a selector or encode/decode a call by function name: the module's alone.
BY_HAND = {"function_signature_to_4byte_selector", "function_abi_to_4byte_selector",
           "encode_abi", "get_abi_output_types", "get_abi_input_types",
           "get_function_by_name", "abi_to_signature", "functions"}
# A function signature such as "isRecorded(bytes32)": lower-case first, types in brackets.
SIGNATURE = re.compile(r"[a-z_]\w*\((?:[\w\[\](),]*)\)")


def hand_built(path: Path) -> list[str]:
    """What in ``path`` builds calldata, picks a function by name or scans an ABI."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        name = (node.attr if isinstance(node, ast.Attribute)
                else node.id if isinstance(node, ast.Name)
                else node.name.rsplit(".", 1)[-1] if isinstance(node, ast.alias) else None)
        if name in BY_HAND:
            found.append(f"line {getattr(node, 'lineno', 0)}: {name}")
        if isinstance(node, ast.Call) and any(
                keyword.arg == "text" and isinstance(keyword.value, ast.Constant)
                and isinstance(keyword.value.value, str)
                and SIGNATURE.fullmatch(keyword.value.value) for keyword in node.keywords):
            found.append(f"line {node.lineno}: a hash of a function signature")
        if isinstance(node, (ast.For, ast.comprehension)) and _is_abi(node.iter):
            found.append(f"line {node.iter.lineno}: a loop over an ABI")
    return found


def _is_abi(node: ast.expr) -> bool:
    """``abi``, ``x.abi``, ``x.load_abi()`` or ``[*abi, ...]``."""
    if isinstance(node, ast.Name):
        return "abi" in node.id.lower().split("_")
    if isinstance(node, ast.Attribute):
        return node.attr in {"abi", "load_abi"}
    if isinstance(node, ast.Call):
        return _is_abi(node.func)
    if isinstance(node, ast.List | ast.Tuple):
        return any(_is_abi(item.value if isinstance(item, ast.Starred) else item)
                   for item in node.elts)
    return False


def test_no_calldata_is_built_outside_the_interface() -> None:
    offenders = {
        str(path.relative_to(PROJECT_ROOT)): found
        for package in PACKAGES for path in sorted((PROJECT_ROOT / package).rglob("*.py"))
        if str(path.relative_to(PROJECT_ROOT)) != INTERFACE and (found := hand_built(path))
    }
    assert offenders == {}, f"only {INTERFACE} may build calldata or read the ABI"


@pytest.mark.parametrize("source, kind", [
    ("from eth_utils.abi import function_signature_to_4byte_selector",
     "function_signature_to_4byte_selector"),
    ("contract.functions.meterOf(m).call()", "functions"),
    ("data = contract.encode_abi('closeSlots', args=[p, s])", "encode_abi"),
    ("selector = keccak(text='isRecorded(bytes32)')[:4]", "a hash of a function signature"),
    ("for entry in abi:\n    pass", "a loop over an ABI"),
    ("names = [e['name'] for e in contract.abi]", "a loop over an ABI"),
])
def test_the_rule_sees_each_way_of_building_calldata(tmp_path: Path, source: str,
                                                     kind: str) -> None:
    module = tmp_path / "module.py"
    module.write_text(source + "\n")
    assert [found.split(": ", 1)[1] for found in hand_built(module)] == [kind]


def test_the_rule_leaves_type_hashes_and_event_topics_alone(tmp_path: Path) -> None:
    """EIP-712 type strings and event signatures are hashed for what they are, not calls."""
    module = tmp_path / "module.py"
    module.write_text('TYPEHASH = keccak(text="Reading(bytes32 meter,uint64 time)")\n'
                      'TOPIC = keccak(text="TradeSettled(bytes32,bytes32)")\n')
    assert hand_built(module) == []

