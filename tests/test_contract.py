"""The Settlement contract on an in-process London EVM (eth-tester with py-evm's LondonVM).

The contract is compiled once per session (into a temporary build directory) and deployed
once per module; every test starts from a chain snapshot taken right after deployment.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import solcx
from eth_abi import encode as abi_encode
from eth_account import Account
from evm_fixtures import TX_GAS, Evm, deploy_evm, events, revert_of
from recordings import RECORDINGS
from web3 import Web3

from pilotchain import contract as settlement
from pilotchain.contract import (
    CompiledContract,
    CompilerNotFound,
    DeploymentFailed,
    DeploymentRecordError,
    compile_settlement,
    deploy_settlement,
    find_solc,
    input_hash,
    is_deployed,
    load_artefacts,
    load_deployment,
    max_batch_size,
    pinned_solc_version,
    save_deployment,
    settlement_contract,
    standard_input,
)
from pilotchain.errors import PilotChainError
from pilotchain.settlement import SettlementABI
from pilotchain.trades import (
    ENERGY_DECIMALS,
    PRICE_DECIMALS,
    TRADE_SETTLED_SIGNATURE,
    TRADE_SETTLED_TOPIC,
    Bill,
    TradeRecord,
    compute_bills,
    decode_trade_settled_logs,
    uuid_to_bytes32,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RECORDER_ROLE = Web3.keccak(text="RECORDER_ROLE")
ADMIN_ROLE = bytes(32)
PUSH0 = 0x5F


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evm(compiled: CompiledContract) -> Evm:
    return deploy_evm(compiled, seed=3, grant_reader=False)


# --- helpers ----------------------------------------------------------------------------


def tuples(records: Sequence[TradeRecord]) -> list[tuple]:
    return [record.as_contract_tuple() for record in records]


def record_batch(evm: Evm, records: Sequence[TradeRecord], sender: str | None = None):
    """Send recordTrades; return the receipt."""
    tx_hash = evm.contract.functions.recordTrades(tuples(records)).transact(
        {"from": sender or evm.recorder.address, "gas": TX_GAS}
    )
    return evm.w3.eth.get_transaction_receipt(tx_hash)


def bill_of(evm: Evm, participant: uuid.UUID) -> Bill:
    return Bill(*evm.contract.functions.billOf(uuid_to_bytes32(participant)).call())


def with_new_ids(records: Sequence[TradeRecord], seed: int) -> list[TradeRecord]:
    rng = random.Random(seed)
    return [
        dataclasses.replace(record, trade_id=uuid.UUID(int=rng.getrandbits(128)))
        for record in records
    ]


def opcodes(code: bytes) -> Iterator[int]:
    """The opcodes of EVM code, skipping PUSH data."""
    position = 0
    while position < len(code):
        opcode = code[position]
        yield opcode
        position += 1 + (opcode - 0x5F if 0x60 <= opcode <= 0x7F else 0)


# --- compilation and artefacts -----------------------------------------------------------


def test_abi_describes_the_trade_settled_event(compiled: CompiledContract):
    (event,) = [item for item in compiled.abi if item.get("name") == "TradeSettled"]
    inputs = [(item["name"], item["type"], item["indexed"]) for item in event["inputs"]]
    assert inputs == [
        ("tradeId", "bytes32", True),
        ("seller", "bytes32", True),
        ("buyer", "bytes32", True),
        ("market", "bytes32", False),
        ("timeSlot", "uint64", False),
        ("sellerOrigin", "bytes32", False),
        ("buyerOrigin", "bytes32", False),
        ("energy", "uint96", False),
        ("price", "uint96", False),
        ("fee", "uint96", False),
    ]
    signature = f"TradeSettled({','.join(item[1] for item in inputs)})"
    assert signature == TRADE_SETTLED_SIGNATURE
    assert Web3.keccak(text=signature) == TRADE_SETTLED_TOPIC


def test_bytecode_runs_on_london(compiled: CompiledContract):
    runtime = bytes.fromhex(compiled.runtime_bytecode.removeprefix("0x"))
    # Strip the CBOR metadata (its length is the last two bytes): it is data, not code.
    code = runtime[: -(int.from_bytes(runtime[-2:], "big") + 2)]
    assert PUSH0 not in set(opcodes(code))
    assert compiled.standard_input["settings"]["evmVersion"] == "london"
    assert compiled.standard_input["settings"]["optimizer"]["enabled"] is True


def test_compiler_version_is_the_pinned_one(compiled: CompiledContract):
    pinned = json.loads((PROJECT_ROOT / "package.json").read_text())["dependencies"]["solc"]
    assert pinned_solc_version() == pinned
    assert compiled.compiler_version.startswith(f"{pinned}+commit.")


def test_artefacts_are_written_and_reloaded(compiled: CompiledContract):
    build_dir = compiled.abi_path.parent
    assert json.loads(compiled.abi_path.read_text()) == compiled.abi
    assert (build_dir / "Settlement.bin").read_text().strip() == compiled.bytecode
    verification_input = json.loads((build_dir / "Settlement.standard-input.json").read_text())
    assert set(verification_input["sources"]) == {
        "contracts/Settlement.sol",
        "@openzeppelin/contracts/access/AccessControl.sol",
        "@openzeppelin/contracts/access/IAccessControl.sol",
        "@openzeppelin/contracts/utils/Context.sol",
        "@openzeppelin/contracts/utils/introspection/ERC165.sol",
        "@openzeppelin/contracts/utils/introspection/IERC165.sol",
    }
    assert all("content" in source for source in verification_input["sources"].values())
    assert load_artefacts(build_dir) == compiled


def test_unchanged_input_reuses_artefacts_without_a_compiler(compiled: CompiledContract):
    again = compile_settlement(compiled.abi_path.parent, solc_binary=Path("/nonexistent/solc"))
    assert again == compiled


def test_input_hash_changes_with_source_and_compiler():
    base = standard_input()
    edited = json.loads(json.dumps(base))
    edited["sources"]["contracts/Settlement.sol"]["content"] += "\n// edited\n"
    assert input_hash(base, "0.8.37") == input_hash(standard_input(), "0.8.37")
    assert input_hash(base, "0.8.37") != input_hash(edited, "0.8.37")
    assert input_hash(base, "0.8.37") != input_hash(base, "0.8.36")


def test_solc_js_wrapper_answers_like_a_native_solc():
    wrapper = PROJECT_ROOT / "scripts" / "lib" / "solc-js"
    output = subprocess.run(
        [str(wrapper), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert f"Version: {pinned_solc_version()}+commit." in output
    assert str(solcx.wrapper.get_solc_version(wrapper)) == pinned_solc_version()
    refused = subprocess.run([str(wrapper), "--bin"], capture_output=True, text=True)
    assert refused.returncode == 2
    assert "only --version and --standard-json" in refused.stderr


def test_native_and_solc_js_give_the_same_contract(compiled: CompiledContract, tmp_path: Path):
    native = settlement._native_solc(pinned_solc_version())
    if native is None:
        pytest.skip("no native solc of the pinned version installed; solc-js compiled it")
    wrapper = PROJECT_ROOT / "scripts" / "lib" / "solc-js"
    by_wrapper = compile_settlement(tmp_path, solc_binary=wrapper, force=True)
    assert by_wrapper.abi == compiled.abi
    assert by_wrapper.bytecode == compiled.bytecode


def test_find_solc_falls_back_to_solc_js(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(settlement, "_native_solc", lambda version: None)
    assert find_solc(pinned_solc_version()) == PROJECT_ROOT / "scripts" / "lib" / "solc-js"


def test_find_solc_explains_how_to_get_a_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(settlement, "_native_solc", lambda version: None)
    with pytest.raises(CompilerNotFound, match=r"npm ci.*solcx\.install v0\.8\.37"):
        find_solc("0.8.37", project_root=tmp_path)


def test_missing_openzeppelin_sources_are_named(tmp_path: Path):
    (tmp_path / "contracts").mkdir()
    shutil.copy(PROJECT_ROOT / "contracts" / "Settlement.sol", tmp_path / "contracts")
    with pytest.raises(PilotChainError, match=r"AccessControl\.sol was not found.*npm ci"):
        standard_input(tmp_path)


def test_contract_constants_match_the_python_format(evm: Evm):
    functions = evm.contract.functions
    assert functions.ENERGY_DECIMALS().call() == ENERGY_DECIMALS
    assert functions.PRICE_DECIMALS().call() == PRICE_DECIMALS
    assert functions.RECORDER_ROLE().call() == RECORDER_ROLE
    assert functions.ENERGY_UNIT().call() == "kWh"
    assert functions.PRICE_UNIT().call() == "euro cent"


# --- deployment ---------------------------------------------------------------------------


def test_deployment_sets_admin_and_recorder(evm: Evm):
    functions = evm.contract.functions
    receipt = evm.w3.eth.get_transaction_receipt(evm.deployment.transaction_hash)
    assert receipt["contractAddress"] == evm.deployment.address
    assert receipt["blockNumber"] == evm.deployment.block_number
    assert evm.deployment.chain_id == evm.w3.eth.chain_id
    assert functions.hasRole(ADMIN_ROLE, evm.operator.address).call() is True
    assert functions.hasRole(RECORDER_ROLE, evm.recorder.address).call() is True
    assert functions.hasRole(RECORDER_ROLE, evm.operator.address).call() is False
    assert functions.hasRole(ADMIN_ROLE, evm.recorder.address).call() is False
    assert is_deployed(evm.w3, evm.deployment)


def test_deploy_refuses_a_bad_recorder_address(evm: Evm, compiled: CompiledContract):
    with pytest.raises(DeploymentFailed, match="not an Ethereum address"):
        deploy_settlement(evm.w3, evm.operator, "0x1234", compiled=compiled)


def test_deploy_reports_an_unfunded_operator(fresh: Evm, compiled: CompiledContract):
    broke = Account.from_key(b"\x07" * 32)
    with pytest.raises(DeploymentFailed, match=f"from {broke.address} failed"):
        deploy_settlement(fresh.w3, broke, fresh.recorder.address, compiled=compiled)


def test_deployment_record_round_trip(evm: Evm, tmp_path: Path):
    path = tmp_path / "deployments" / "settlement.json"
    save_deployment(evm.deployment, path)
    stored = json.loads(path.read_text())
    assert stored["address"] == evm.deployment.address
    assert stored["chain_id"] == evm.w3.eth.chain_id
    assert not Path(stored["abi_path"]).is_absolute()
    loaded = load_deployment(path, chain_id=evm.w3.eth.chain_id)
    assert loaded == dataclasses.replace(
        evm.deployment, abi_path=evm.deployment.abi_path.resolve()
    )
    bound = settlement_contract(evm.w3, loaded)
    assert bound.functions.isRecorded(bytes(32)).call() is False


def test_deployment_record_for_another_chain_is_refused(evm: Evm, tmp_path: Path):
    path = tmp_path / "settlement.json"
    save_deployment(evm.deployment, path)
    chain_id = evm.w3.eth.chain_id
    with pytest.raises(DeploymentRecordError, match=f"is for chain {chain_id}, not chain 1;"):
        load_deployment(path, chain_id=1)
    other = dataclasses.replace(evm.deployment, chain_id=1)
    assert is_deployed(evm.w3, other) is False


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{not json", "cannot be read"),
        ('{"address": "0x12"}', "is malformed"),
    ],
)
def test_broken_deployment_records_are_named(tmp_path: Path, content: str | None, message: str):
    path = tmp_path / "settlement.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DeploymentRecordError, match=message):
        load_deployment(path)


# --- who may record -------------------------------------------------------------------------


def test_only_recorders_record(fresh: Evm, recordings: dict[str, list[TradeRecord]]):
    trades = recordings["default_3_one_sided"][:2]
    call = fresh.contract.functions.recordTrades(tuples(trades))
    for sender in (fresh.outsider, fresh.operator.address):
        assert revert_of(fresh, call, sender) == (
            f"AccessControlUnauthorizedAccount(account={sender}, "
            f"neededRole=0x{RECORDER_ROLE.hex()})"
        )
    assert fresh.contract.functions.isRecorded(uuid_to_bytes32(trades[0].trade_id)).call() is False
    assert bill_of(fresh, trades[0].seller) == Bill()


def test_admin_grants_and_revokes_the_recorder_role(
    fresh: Evm, recordings: dict[str, list[TradeRecord]]
):
    first, second = recordings["default_3_one_sided"][:2]
    functions = fresh.contract.functions
    functions.grantRole(RECORDER_ROLE, fresh.outsider).transact({"from": fresh.operator.address})
    assert functions.hasRole(RECORDER_ROLE, fresh.outsider).call() is True
    assert record_batch(fresh, [first], sender=fresh.outsider)["status"] == 1
    assert functions.isRecorded(uuid_to_bytes32(first.trade_id)).call() is True

    functions.revokeRole(RECORDER_ROLE, fresh.outsider).transact({"from": fresh.operator.address})
    assert functions.hasRole(RECORDER_ROLE, fresh.outsider).call() is False
    call = functions.recordTrades(tuples([second]))
    assert revert_of(fresh, call, fresh.outsider).startswith("AccessControlUnauthorizedAccount")


def test_only_the_admin_manages_roles(fresh: Evm):
    grant = fresh.contract.functions.grantRole(RECORDER_ROLE, fresh.outsider)
    for sender in (fresh.outsider, fresh.recorder.address):
        assert revert_of(fresh, grant, sender) == (
            f"AccessControlUnauthorizedAccount(account={sender}, neededRole=0x{ADMIN_ROLE.hex()})"
        )
    assert fresh.contract.functions.hasRole(RECORDER_ROLE, fresh.outsider).call() is False


# --- exactly once ---------------------------------------------------------------------------


def test_a_batch_records_trades_and_reports_the_count(
    fresh: Evm, recordings: dict[str, list[TradeRecord]]
):
    trades = recordings["default_2a_one_sided"][:5]
    functions = fresh.contract.functions
    returned = functions.recordTrades(tuples(trades)).call({"from": fresh.recorder.address})
    assert returned == [5, 0]
    receipt = record_batch(fresh, trades)
    assert events(fresh, receipt, "BatchRecorded") == [{"recorded": 5, "skipped": 0}]
    assert len(events(fresh, receipt, "TradeSettled")) == 5
    for trade in trades:
        trade_id = uuid_to_bytes32(trade.trade_id)
        assert functions.isRecorded(trade_id).call() is True
        assert functions.recordedIn(trade_id).call() == receipt["blockNumber"]


def test_a_recorded_trade_is_skipped_when_sent_again(
    fresh: Evm, recordings: dict[str, list[TradeRecord]]
):
    trade = recordings["grid_fees_default_2a_one_sided"][0]
    first = record_batch(fresh, [trade])
    bill_after_first = bill_of(fresh, trade.seller)
    assert bill_after_first == compute_bills([trade])[trade.seller]

    returned = fresh.contract.functions.recordTrades(tuples([trade])).call(
        {"from": fresh.recorder.address}
    )
    assert returned == [0, 1]
    again = record_batch(fresh, [trade])
    assert again["status"] == 1
    assert events(fresh, again, "BatchRecorded") == [{"recorded": 0, "skipped": 1}]
    assert events(fresh, again, "TradeSettled") == []
    assert bill_of(fresh, trade.seller) == bill_after_first
    trade_id = uuid_to_bytes32(trade.trade_id)
    assert fresh.contract.functions.recordedIn(trade_id).call() == first["blockNumber"]


def test_duplicates_inside_a_batch_are_skipped_and_counted(
    fresh: Evm, recordings: dict[str, list[TradeRecord]]
):
    a, b, c = recordings["default_2a_two_sided"][:3]
    record_batch(fresh, [b])
    batch = [a, b, a, c, c]
    returned = fresh.contract.functions.recordTrades(tuples(batch)).call(
        {"from": fresh.recorder.address}
    )
    assert returned == [2, 3]
    receipt = record_batch(fresh, batch)
    assert events(fresh, receipt, "BatchRecorded") == [{"recorded": 2, "skipped": 3}]
    settled = decode_trade_settled_logs(receipt["logs"])
    assert settled == [a, c]
    reference = compute_bills([a, b, c])
    for participant, bill in reference.items():
        assert bill_of(fresh, participant) == bill


def test_an_empty_batch_is_refused(fresh: Evm):
    call = fresh.contract.functions.recordTrades([])
    assert revert_of(fresh, call, fresh.recorder.address) == "EmptyBatch()"


@pytest.mark.parametrize("field", ["trade_id", "seller", "buyer"])
def test_a_zero_id_reverts_the_batch(
    fresh: Evm, recordings: dict[str, list[TradeRecord]], field: str
):
    good, bad = recordings["default_3_one_sided"][:2]
    broken = bad.as_contract_tuple()
    position = {"trade_id": 0, "seller": 3, "buyer": 4}[field]
    broken = (*broken[:position], bytes(32), *broken[position + 1 :])
    call = fresh.contract.functions.recordTrades([good.as_contract_tuple(), broken])
    assert revert_of(fresh, call, fresh.recorder.address) == "InvalidTrade(index=1)"
    assert fresh.contract.functions.isRecorded(uuid_to_bytes32(good.trade_id)).call() is False


# --- registry -----------------------------------------------------------------------------


def test_registry_links_participants_and_wallets(
    fresh: Evm, recordings: dict[str, list[TradeRecord]]
):
    trades = recordings["default_3_one_sided"]
    participant = trades[0].seller
    pid = uuid_to_bytes32(participant)
    wallet, other_wallet = fresh.w3.eth.accounts[3], fresh.w3.eth.accounts[4]
    functions = fresh.contract.functions
    admin = {"from": fresh.operator.address}

    record_batch(fresh, trades)  # recorded although nobody is registered yet
    assert functions.walletOf(pid).call() == "0x" + "00" * 20
    assert revert_of(fresh, functions.billOfWallet(wallet), wallet) == (
        f"WalletNotRegistered(wallet={wallet})"
    )

    receipt = fresh.w3.eth.get_transaction_receipt(
        functions.registerParticipant(pid, wallet).transact(admin)
    )
    assert events(fresh, receipt, "ParticipantRegistered") == [
        {"participant": pid, "wallet": wallet}
    ]
    assert functions.walletOf(pid).call() == wallet
    assert functions.participantOf(wallet).call() == pid
    expected = compute_bills(trades)[participant]
    assert functions.billOfWallet(wallet).call({"from": wallet}) == [pid, *expected.as_tuple()]

    functions.registerParticipant(pid, other_wallet).transact(admin)  # moves the link
    assert functions.walletOf(pid).call() == other_wallet
    assert functions.participantOf(wallet).call() == bytes(32)
    assert functions.participantOf(other_wallet).call() == pid

    functions.unregisterParticipant(pid).transact(admin)
    assert functions.walletOf(pid).call() == "0x" + "00" * 20
    assert functions.participantOf(other_wallet).call() == bytes(32)
    assert bill_of(fresh, participant) == expected  # the bill stays


def test_registry_refusals(fresh: Evm):
    functions = fresh.contract.functions
    first, second = uuid_to_bytes32(uuid.uuid4()), uuid_to_bytes32(uuid.uuid4())
    wallet = fresh.w3.eth.accounts[3]
    operator = fresh.operator.address
    functions.registerParticipant(first, wallet).transact({"from": operator})

    assert revert_of(fresh, functions.registerParticipant(second, wallet), operator) == (
        f"WalletAlreadyRegistered(wallet={wallet}, participant=0x{first.hex()})"
    )
    assert revert_of(fresh, functions.registerParticipant(bytes(32), wallet), operator) == (
        "ZeroParticipant()"
    )
    zero = "0x" + "00" * 20
    assert revert_of(fresh, functions.registerParticipant(second, zero), operator) == (
        "ZeroAddress()"
    )
    assert revert_of(fresh, functions.unregisterParticipant(second), operator) == (
        f"ParticipantNotRegistered(participant=0x{second.hex()})"
    )
    for call in (
        functions.registerParticipant(second, fresh.outsider),
        functions.unregisterParticipant(first),
    ):
        assert revert_of(fresh, call, fresh.recorder.address).startswith(
            "AccessControlUnauthorizedAccount"
        )


# --- whole recordings ---------------------------------------------------------------------


@pytest.mark.parametrize("name", [path.stem for path in RECORDINGS])
def test_a_recording_settles_to_the_reference_bills_and_decodes_back(
    fresh: Evm, recordings: dict[str, list[TradeRecord]], name: str
):
    trades = recordings[name]
    logs = []
    for start in range(0, len(trades), 64):
        receipt = record_batch(fresh, trades[start : start + 64])
        assert receipt["status"] == 1
        logs.extend(receipt["logs"])

    decoded = decode_trade_settled_logs(logs)
    assert len(decoded) == len(trades)
    for original, back in zip(trades, decoded, strict=True):
        assert dataclasses.asdict(back) == dataclasses.asdict(original)

    reference = compute_bills(trades)
    assert len(reference) >= 3
    for participant, bill in reference.items():
        assert bill_of(fresh, participant) == bill, f"bill of {participant} in {name}"
    assert bill_of(fresh, uuid.uuid4()) == Bill()


def test_a_full_batch_costs_at_most_40k_gas_per_trade(
    fresh: Evm, recordings: dict[str, list[TradeRecord]]
):
    pool = [trade for trades in recordings.values() for trade in trades]
    for start in range(0, len(pool), 300):  # every participant gets a bill first
        record_batch(fresh, pool[start : start + 300])
    batch = with_new_ids((pool * 2)[: max_batch_size()], seed=7)
    receipt = record_batch(fresh, batch)
    assert events(fresh, receipt, "BatchRecorded") == [{"recorded": len(batch), "skipped": 0}]
    assert receipt["gasUsed"] / len(batch) <= 40_000


def test_the_largest_batch_fits_under_the_transaction_size_limit(
    evm: Evm, recordings: dict[str, list[TradeRecord]]
):
    pool = [trade for trades in recordings.values() for trade in trades]
    batch = (pool * 2)[: max_batch_size()]
    call = evm.contract.functions.recordTrades(tuples(batch))
    transaction = call.build_transaction(
        {
            "from": evm.recorder.address,
            "nonce": 2**32,
            "gas": 30_000_000,
            "maxFeePerGas": 10**12,
            "maxPriorityFeePerGas": 10**11,
            "chainId": evm.w3.eth.chain_id,
        }
    )
    size = len(evm.recorder.sign_transaction(transaction).raw_transaction)
    assert size <= settlement.MAX_TRANSACTION_BYTES
    # The limit is used, not just respected: less than two trades' worth of room is left.
    assert size > settlement.MAX_TRANSACTION_BYTES - 2 * settlement.CALLDATA_BYTES_PER_TRADE


def test_describe_revert_knows_solidity_builtin_errors(compiled: CompiledContract):
    error = Web3.keccak(text="Error(string)")[:4] + abi_encode(["string"], ["boom"])
    panic = Web3.keccak(text="Panic(uint256)")[:4] + abi_encode(["uint256"], [0x11])
    describe = SettlementABI(compiled.abi).describe_revert
    assert describe(error) == "Error(message=boom)"
    assert describe("0x" + panic.hex()) == "Panic(code=17)"
    assert describe(b"\x01\x02\x03\x04") == "unknown revert 0x01020304"
