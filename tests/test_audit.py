"""`pilotchain audit` on the real chain: a faithful Settlement passes, and a Settlement with
real bugs compiled in (a seller credited one unit too much, a wrong record block) is caught,
each difference named."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from bridge_fixtures import Deployed
from recordings import DATA

from pilotchain.audit import audit
from pilotchain.chain import Sender, connect, wait_for_receipt
from pilotchain.contract import (
    compile_settlement,
    deploy_settlement,
    record_trades_calldata,
    save_deployment,
)
from pilotchain.settings import PROJECT_ROOT
from pilotchain.trades import TradeRecord, read_recording
from runner.localnet import LocalNetwork

RECORDINGS = ("default_2a_one_sided.jsonl", "default_3_one_sided.jsonl")


def record(net: LocalNetwork, contract: str, abi: list[dict[str, object]],
           records: list[TradeRecord]) -> None:
    w3 = connect(net.rpc_url)
    sender = Sender(w3, net.keys.role("bridge").unlock())
    tx_hash = sender.send({"to": contract, "data": record_trades_calldata(abi, records)})
    assert wait_for_receipt(w3, tx_hash, timeout=60)["status"] == 1


def test_the_audit_of_a_faithful_settlement_finds_nothing(deployed: Deployed) -> None:
    net, deployment = deployed.net, deployed.deployment
    abi = compile_settlement().abi
    batches = [read_recording(DATA / name) for name in RECORDINGS]
    for batch in [*batches, batches[0]]:  # the last one again: every trade skipped
        record(net, deployment.address, abi, batch)
    env = {**os.environ, "RPC_URL": net.rpc_url, "CHAIN_ID": str(net.settings.chain_id),
           "DEPLOYMENT_FILE": str(deployed.record)}
    result = subprocess.run([sys.executable, "-m", "runner.cli", "audit"], env=env,
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    trades = sum(len(batch) for batch in batches)
    assert f": {trades} trades in 3 batches," in result.stdout
    assert "The books hold" in result.stdout and "DIFFERENCE" not in result.stdout


def faulty_settlement(tmp_path: Path) -> Path:
    """A copy of the project whose Settlement has two real bugs compiled in."""
    project = tmp_path / "faulty"
    (project / "contracts").mkdir(parents=True)
    for name in ("node_modules", "scripts"):
        (project / name).symlink_to(PROJECT_ROOT / name)
    shutil.copy(PROJECT_ROOT / "package.json", project / "package.json")
    source = (PROJECT_ROOT / "contracts" / "Settlement.sol").read_text()
    bugs = {
        "_addTo(_selling, _sellingAt, trade.seller, trade.energy, trade.price, periods)":
            "_addTo(_selling, _sellingAt, trade.seller, trade.energy, trade.price + 1, periods)",
        "_recordedIn[tradeId] = block.number;": "_recordedIn[tradeId] = block.number + 1;",
    }
    for right, wrong in bugs.items():
        assert right in source, f"the contract no longer has {right!r}"
        source = source.replace(right, wrong)
    (project / "contracts" / "Settlement.sol").write_text(source)
    return project


def test_the_audit_names_every_difference_of_a_faulty_settlement(
        chain: LocalNetwork, tmp_path: Path) -> None:
    project = faulty_settlement(tmp_path)
    compiled = compile_settlement(tmp_path / "build", project_root=project)
    w3 = connect(chain.rpc_url)
    deployment = deploy_settlement(w3, chain.keys.role("operator").unlock(),
                                   chain.keys.role("bridge").address, compiled=compiled)
    save_deployment(deployment, tmp_path / "settlement.json")
    records = read_recording(DATA / RECORDINGS[1])
    record(chain, deployment.address, compiled.abi, records)

    report = audit(w3, chain.rpc_url, deployment)
    assert not report.ok
    kinds = [finding.kind for finding in report.findings]
    sellers = {r.seller for r in records}
    assert kinds.count("record block") == len(records)
    assert kinds.count("bill") == len(sellers)
    assert kinds.count("books") == 1
    books = next(f for f in report.findings if f.kind == "books")
    assert "differs from money payable" in books.detail
