"""Fixtures and helpers of the portal indexer's tests: a private PostgreSQL server, an empty
index database of either engine, trades recorded straight through ``recordTrades``, and the
indexer as a real process.

Loaded as a pytest plug-in by conftest.py; test modules import only helpers from here.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bridge_fixtures import Deployed, ServiceProcess, mined_all, settled_on_chain

from pilotchain.chain import Sender, connect, fees_for
from pilotchain.contract import Deployment
from pilotchain.settings import PROJECT_ROOT
from pilotchain.settlement import Settlement, SettlementABI
from pilotchain.trades import TRADE_SETTLED_TOPIC, TradeRecord
from portal.config import PortalSettings
from runner.postgres import PostgresServer

__all__ = ["BILL_FIELDS", "ENGINES", "IndexerProcess", "chain_trade_rows", "index_url",
           "open_period_bill_on_chain", "portal_settings", "postgres_server", "record_trades",
           "trade_row"]

ENGINES = ("sqlite", "postgresql")
# Trades per recordTrades transaction: under geth's 128 KiB, and a few per 60M-gas block.
BATCH = 400


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL cluster (Debian's binaries) of its own for the session."""
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=ENGINES)
def index_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty index database: a SQLite file, or a fresh database on the session's
    PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'portal.sqlite3'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"portal_{uuid.uuid4().hex[:12]}")


def portal_settings(target: Deployed, database_url: str, **overrides: Any) -> PortalSettings:
    """Settings for an indexer of ``target``'s contract into ``database_url``."""
    chain = replace(target.net.settings, rpc_url_override=target.net.rpc_url,
                    deployment_file_override=target.record)
    base = PortalSettings(chain=chain, database_url_override=database_url,
                          poll_interval=0.2, backoff_max=1.0)
    return replace(base, **overrides)


def record_trades(target: Deployed, records: Sequence[TradeRecord], *, batch: int = BATCH
                  ) -> list[dict[str, Any]]:
    """Record ``records`` with the bridge's key, ``batch`` per transaction, all sent before
    the first is awaited; returns the receipts (each checked successful)."""
    w3 = connect(target.net.rpc_url)
    sender = Sender(w3, target.net.keys.role("bridge").unlock())
    abi = target.deployment.load_abi()
    # Headroom for a run of full blocks: the base fee rises 12.5% with each.
    fees = fees_for(w3.eth.get_block("latest")["baseFeePerGas"], headroom=8)
    hashes = [sender.send({"to": target.deployment.address,
                           "data": SettlementABI(abi).record_trades(records[start:start + batch])},
                          fees=fees)
              for start in range(0, len(records), batch)]
    return [dict(receipt) for receipt in mined_all(w3, [("recordTrades", tx_hash)
                                                         for tx_hash in hashes])]


def trade_row(record: TradeRecord) -> dict[str, Any]:
    """A trade as the portal's trades table holds it."""
    return {"trade_id": str(record.trade_id), "market": str(record.market),
            "time_slot": record.time_slot, "seller": str(record.seller),
            "buyer": str(record.buyer), "seller_origin": str(record.seller_origin),
            "buyer_origin": str(record.buyer_origin), "energy": record.energy,
            "price": record.price, "fee": record.fee}


def chain_trade_rows(target: Deployed) -> list[dict[str, Any]]:
    """Every TradeSettled log of the contract with where it is, as the table should hold it."""
    w3 = connect(target.net.rpc_url)
    logs = w3.eth.get_logs({"address": target.deployment.address,
                            "fromBlock": target.deployment.block_number, "toBlock": "latest",
                            "topics": [TRADE_SETTLED_TOPIC]})
    records = settled_on_chain(target)
    return [{**trade_row(record), "block_number": log["blockNumber"],
             "log_index": log["logIndex"], "tx_hash": log["transactionHash"].to_0x_hex()}
            for record, log in zip(records, logs, strict=True)]


BILL_FIELDS = ("energy_sold", "energy_bought", "money_receivable", "money_payable",
               "balancing_charges", "balancing_credits", "net")


def open_period_bill_on_chain(rpc_url: str, deployment: Deployment, participant: bytes,
                              block: int | str = "latest") -> dict[str, int]:
    """The contract's own bill of the open billing period, at ``block``: the running bill
    (``billOf``, ``balancingOf``) less every closed period's ``statementOf`` (a statement is
    the bill's change over its period, so their sum is the bill when the last one closed),
    all read through pilotchain.settlement's typed reads."""
    contract = Settlement.at(connect(rpc_url), rpc_url, deployment)
    abi = contract.abi
    count = contract.read(abi.period_count(), block=block)
    bill = contract.read(abi.bill_of(participant), block=block)
    balancing = contract.read(abi.balancing_of(participant), block=block)
    statements = contract.read_all([abi.statement_of(period, participant)
                                     for period in range(1, count + 1)],
                                    "Reading the statements", block=block)
    running = (bill.energy_sold, bill.energy_bought, bill.money_receivable,
               bill.money_payable, balancing.charges, balancing.credits,
               bill.money_receivable + balancing.credits - bill.money_payable
               - balancing.charges)
    return {field: total - sum(int(s[index]) for s in statements)
            for index, (field, total) in enumerate(zip(BILL_FIELDS, running, strict=True))}


class IndexerProcess(ServiceProcess):
    """``python -m portal`` (the ``pilotchain-portal-indexer`` command) as a real process."""

    module = "portal"

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": os.environ.get("HOME", "/tmp"), "PYTHONPATH": str(PROJECT_ROOT),
                **self.settings.to_env()}
