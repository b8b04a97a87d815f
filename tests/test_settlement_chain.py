"""The Settlement contract on the real local Clique network, deployed by the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bridge_fixtures import mined
from recordings import DATA

from pilotchain.chain import Sender, connect
from pilotchain.contract import load_deployment, settlement_contract
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
