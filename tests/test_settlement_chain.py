"""The Settlement contract on the real local Clique network, deployed by the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from bridge_fixtures import mined
from recordings import DATA
from web3 import Web3

from pilotchain.chain import Sender, connect, wait_for
from pilotchain.contract import (
    load_deployment,
    load_signed_deployment,
    save_signed_deployment,
    settlement_contract,
    sign_deployment,
)
from pilotchain.deployment import in_flight_file
from pilotchain.trades import compute_bills, decode_trade_settled_logs, read_recording
from runner.localnet import LocalNetwork

pytestmark = pytest.mark.chain


def cli_env(net: LocalNetwork, deployment_file: Path) -> dict[str, str]:
    """Point the `pilotchain` command at a test network."""
    return {
        **os.environ,
        "RPC_URL": net.rpc_url,
        "CHAIN_ID": str(net.settings.chain_id),
        "KEYS_DIR": str(net.settings.keys_dir),
        "GENESIS_FILE": str(net.settings.genesis_file),
        "NATIVE_DATA_DIR": str(net.home),
        "DEPLOYMENT_FILE": str(deployment_file),
    }


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pilotchain.cli", *args], env=env,
                          capture_output=True, text=True, timeout=180, check=False)


def test_deploy_command_deploys_once_and_batch_decodes_to_gsy_trades(
        chain: LocalNetwork, tmp_path: Path) -> None:
    record = tmp_path / "settlement.json"
    env = cli_env(chain, record)
    first = run_cli("deploy", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("Deployed Settlement at 0x")
    again = run_cli("deploy", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("Already deployed: Settlement at")

    deployment = load_deployment(record, chain_id=chain.settings.chain_id)
    w3 = connect(chain.rpc_url)
    contract = settlement_contract(w3, deployment)
    bridge = chain.keys.role("bridge").unlock()
    assert contract.functions.hasRole(contract.functions.RECORDER_ROLE().call(),
                                      bridge.address).call()

    recording = DATA / "default_2a_one_sided.jsonl"
    records = read_recording(recording)
    originals = [json.loads(line) for line in recording.read_text().splitlines()]
    trades = [record.as_contract_tuple() for record in records]
    batch_data = contract.encode_abi("recordTrades", args=[trades])
    sender = Sender(w3, bridge)
    tx_hash = sender.send({"to": deployment.address, "data": batch_data})
    receipt = mined(w3, tx_hash)
    assert receipt["status"] == 1

    decoded = decode_trade_settled_logs(receipt["logs"])
    assert decoded == records
    for record_, original in zip(decoded, originals, strict=True):
        fields, trade = record_.as_gsy_fields(), original["trade"]
        assert fields["id"] == trade["id"]
        assert fields["market_id"] == original["market_id"]
        for party in ("seller", "buyer"):
            assert fields[party]["uuid"] == trade[party]["uuid"]
            assert fields[party]["origin_uuid"] == trade[party]["origin_uuid"]
        assert fields["energy"] == trade["energy"]
        assert fields["price"] == trade["price"]
        assert fields["fee_price"] == trade["fee_price"]
        assert fields["time_slot"].replace("T", " ").startswith(
            original["time_slot"].removesuffix("+00:00"))

    # The same trades again through the RPC node: every one skipped, bills unchanged.
    replay = sender.send({"to": deployment.address, "data": batch_data})
    replay_receipt = mined(w3, replay)
    assert decode_trade_settled_logs(replay_receipt["logs"]) == []
    batch = contract.events.BatchRecorded().process_receipt(replay_receipt)[0]["args"]
    assert (batch["recorded"], batch["skipped"]) == (0, len(records))
    for participant, bill in compute_bills(records).items():
        on_chain = contract.functions.billOf(participant.int.to_bytes(32, "big")).call()
        assert tuple(on_chain) == bill.as_tuple(), participant


def operator_creations(w3: Web3, operator: str, after: int) -> list[str]:
    """The contract-creating transactions ``operator`` sent in the blocks after ``after``."""
    return [tx["hash"].to_0x_hex() for number in range(after + 1, w3.eth.block_number + 1)
            for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]
            if tx["to"] is None and tx["from"] == operator]


def test_a_deploy_killed_in_flight_records_its_own_contract_on_the_next_run(
        chain: LocalNetwork, tmp_path: Path) -> None:
    """Compose starts `deploy` again when it dies; one killed awaiting its contract (before
    it recorded it) must record that one, not deploy a second."""
    record = tmp_path / "settlement.json"
    env = cli_env(chain, record)
    w3 = connect(chain.rpc_url)
    operator = chain.keys.role("operator").address
    start = w3.eth.block_number
    in_flight = in_flight_file(record)
    first = subprocess.Popen([sys.executable, "-m", "pilotchain.cli", "deploy"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: in_flight.exists() or first.poll() is not None, timeout=120,
                 what="the deploy to sign its transaction")
    finally:
        first.kill()
        _, stderr = first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL, f"the deploy ended before it was killed: {stderr}"
    assert not record.exists()
    signed = load_signed_deployment(in_flight)
    assert signed is not None

    again = run_cli("deploy", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("Deployed Settlement at")
    deployment = load_deployment(record, chain_id=chain.settings.chain_id)
    assert deployment.transaction_hash == signed.transaction_hash
    assert not in_flight.exists()
    assert operator_creations(w3, operator, start) == [signed.transaction_hash]


def test_a_deploy_in_flight_whose_nonce_went_elsewhere_is_replaced(
        chain: LocalNetwork, tmp_path: Path) -> None:
    """A signed deployment that never reached the node, its nonce since taken by another
    of the operator's transactions, can never be mined: the next run deploys anew."""
    record = tmp_path / "settlement.json"
    w3 = connect(chain.rpc_url)
    operator = chain.keys.role("operator").unlock()
    start = w3.eth.block_number
    signed = sign_deployment(w3, operator, chain.keys.role("bridge").address)
    save_signed_deployment(signed, in_flight_file(record))
    other = Sender(w3, operator).send({"to": operator.address, "value": 0, "gas": 21_000})
    assert mined(w3, other)["status"] == 1

    ran = run_cli("deploy", env=cli_env(chain, record))
    assert ran.returncode == 0, ran.stderr
    deployment = load_deployment(record, chain_id=chain.settings.chain_id)
    assert deployment.transaction_hash != signed.transaction_hash
    assert not in_flight_file(record).exists()
    assert operator_creations(w3, operator.address, start) == [deployment.transaction_hash]
