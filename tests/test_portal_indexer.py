"""The portal's indexer on the real chain, into SQLite and a real PostgreSQL server: recorded
gsy-e trades and every other kept event indexed exactly once, a crash between rows and cursor
leaving nothing half-indexed, ``kill -9`` during 10,000 trades, a database of another
deployment refused."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from bridge_fixtures import (
    START_SECONDS,
    Deployed,
    send,
    send_calls,
    synthesise,
    wait_for_work,
)
from eth_account import Account
from portal_fixtures import (
    IndexerProcess,
    chain_trade_rows,
    open_period_bill_on_chain,
    portal_settings,
    record_trades,
    trade_row,
)
from recordings import RECORDINGS
from web3 import Web3

from pilotchain.chain import NodeRefused, Sender, connect, wait_for
from pilotchain.config import masked_url
from pilotchain.contract import settlement_contract
from pilotchain.errors import ConfigError
from pilotchain.metering import OPERATOR, WH, Domain, MeterReading, meter_id, sign_reading
from pilotchain.settings import PROJECT_ROOT
from pilotchain.trades import (
    TradeRecord,
    parse_event,
    read_recording,
    uuid_to_bytes32,
)
from portal import indexer as indexer_module
from portal import queries
from portal.config import PortalSettings
from portal.db import Block, Database
from portal.errors import BlockTooLarge, DatabaseError, WrongDatabase
from portal.events import EVENTS, Row, id_text
from portal.indexer import Indexer
from portal.names import names_in_event, save_gsy_names, set_display_name, shown_names
from portal.sums import OPERATOR_ID

SLOT = 900
CT = 10**18


def wait_confirmed(target: Deployed, block: int, confirmations: int) -> None:
    net = target.net
    net.wait_for_block(block + confirmations)


def indexed(settings: PortalSettings) -> Indexer:
    """An indexer caught up with the confirmed head (and closed)."""
    indexer = Indexer(settings)
    try:
        indexer.catch_up()
    finally:
        indexer.close()
    return indexer


# --- without a chain ---------------------------------------------------------------------


def test_ids_read_as_gsy_e_uuids_unless_they_are_not_one() -> None:
    house = uuid.uuid4()
    assert id_text(uuid_to_bytes32(house)) == str(house)
    operator = Web3.keccak(text="pilotchain:grid-operator")
    assert id_text(bytes(operator)) == operator.to_0x_hex()


@pytest.mark.parametrize("raw", ["mysql://x/y", "sqlite:///", "portal.db"])
def test_a_database_url_of_neither_engine_is_refused_by_name(raw: str) -> None:
    with pytest.raises(ConfigError, match="PORTAL_DATABASE_URL must be sqlite:///"):
        PortalSettings.from_env({"PORTAL_DATABASE_URL": raw})


def test_a_relative_sqlite_file_is_under_the_project() -> None:
    settings = PortalSettings.from_env({"PORTAL_DATABASE_URL": "sqlite:///data/x.sqlite3"})
    assert settings.database_url == f"sqlite:///{PROJECT_ROOT / 'data/x.sqlite3'}"
    default = PortalSettings.from_env({"NATIVE_DATA_DIR": "/srv/chain"})
    assert default.database_url == "sqlite:////srv/chain/portal.sqlite3"


# --- on the real chain -------------------------------------------------------------------


def test_recordings_are_indexed_exactly_as_the_chain_and_the_recording_say(
        deployed: Deployed, index_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """... and, caught up after more new rows than the threshold (lowered here from 10,000),
    the indexer has PostgreSQL refresh its statistics and visibility map."""
    records = [record for path in RECORDINGS for record in read_recording(path)]
    receipts = record_trades(deployed, records)
    settings = portal_settings(deployed, index_url)  # the default: two confirmations
    wait_confirmed(deployed, receipts[-1]["blockNumber"], settings.confirmations)
    monkeypatch.setattr(indexer_module, "REFRESH_AFTER_ROWS", len(records) // 2)
    indexer = indexed(settings)
    head = deployed.net.block_number()

    db = Database(index_url)
    try:
        rows = db.rows("trades")
        cursor = db.cursor()
        if db.dialect == "postgresql":
            assert db.fetch("SELECT last_vacuum IS NOT NULL, last_analyze IS NOT NULL "
                            "FROM pg_stat_user_tables WHERE relname = 'trades'") == [
                (True, True)]
        assert indexer.rows_since_refresh == 0
    finally:
        db.close()
    assert rows == chain_trade_rows(deployed)
    # The recordings repeat no trade id (the contract would skip a repeat).
    by_id = {str(record.trade_id): trade_row(record) for record in records}
    assert len(by_id) == len(records) == len(rows)
    assert {row["trade_id"]: {k: row[k] for k in by_id[row["trade_id"]]} for row in rows} == by_id
    assert cursor is not None and indexer.cursor == cursor
    assert cursor.block_number <= head - settings.confirmations


def without_where(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in ("block_number", "log_index", "tx_hash")}
            for row in rows]


def test_every_kept_event_is_indexed(deployed: Deployed, index_url: str) -> None:
    """Wallets, meters, readings, rates, balanced and unmetered slots, periods, payments."""
    w3 = connect(deployed.net.rpc_url)
    operator = deployed.net.keys.role("operator").unlock()
    contract = settlement_contract(w3, deployed.deployment)
    admin = Sender(w3, operator)
    recorder = Sender(w3, deployed.net.keys.role("bridge").unlock())
    house, market, buyer = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    pid = uuid_to_bytes32(house)
    first_wallet, second_wallet = Account.create().address, Account.create().address
    meter_key = Account.create()
    meter = meter_id(uuid.uuid4())

    # The operator's calls in two batches around the bridge's trade, which needs the meter
    # (to count across it) and comes before the slot's closing.
    send_calls(w3, admin, contract,
               ("registerParticipant", pid, first_wallet),
               ("registerParticipant", pid, second_wallet),  # replaces the first
               ("unregisterParticipant", pid),
               ("registerMeter", meter, meter_key.address, pid, pid),
               ("setCloseDelay", 0),
               ("setRates", 0, 40 * CT, 30 * CT, 0),
               ("grantRole", contract.functions.READER_ROLE().call(), operator.address))
    head = w3.eth.get_block("latest")["timestamp"]
    slot = head // SLOT * SLOT - 2 * SLOT  # ended, and its deadline (no delay) passed
    sale = TradeRecord(uuid.uuid4(), market, slot, house, buyer, house, buyer, 10 * WH, CT, 0)
    send(w3, recorder, contract, "recordTrades", [sale.as_contract_tuple()])
    domain = Domain(w3.eth.chain_id, contract.address)
    readings = [sign_reading(MeterReading(meter, slot, 1000, 500), meter_key, domain),
                sign_reading(MeterReading(meter, slot + SLOT, 1000, 507), meter_key, domain)]
    *_, last = send_calls(w3, admin, contract,
                          ("submitReadings", [r.as_contract_tuple() for r in readings]),
                          ("closeSlots", [pid, pid], [slot, slot - SLOT]),
                          ("deactivateMeter", meter, slot + SLOT),
                          ("closePeriod", slot + SLOT),
                          ("markPaid", 1, pid))

    settings = portal_settings(deployed, index_url, confirmations=0)
    indexed(settings)
    db = Database(index_url)
    try:
        got = {spec.table: without_where(db.rows(spec.table)) for spec in EVENTS}
        where = db.rows("statements_paid")[0]
    finally:
        db.close()
    h, m = str(house), id_text(meter)
    assert got["trades"] == [trade_row(sale)]
    assert got["wallet_events"] == [
        {"participant": h, "wallet": first_wallet, "action": "registered"},
        {"participant": h, "wallet": first_wallet, "action": "unregistered"},
        {"participant": h, "wallet": second_wallet, "action": "registered"},
        {"participant": h, "wallet": second_wallet, "action": "unregistered"}]
    registered = got["meters_registered"]
    assert len(registered) == 1 and registered[0]["meter"] == m
    assert (registered[0]["participant"], registered[0]["signer"], registered[0]["home_area"]) \
        == (h, meter_key.address, h)
    assert got["meters_deactivated"] == [
        {"meter": m, "participant": h, "active_until": slot + SLOT}]
    assert got["readings"] == [
        {"meter": m, "time": slot, "import_wh": 1000, "export_wh": 500,
         "minutes_anchor": "0x" + "00" * 32},
        {"meter": m, "time": slot + SLOT, "import_wh": 1000, "export_wh": 507,
         "minutes_anchor": "0x" + "00" * 32}]
    assert got["rates"] == [{"from_slot": 0, "shortfall_rate": 40 * CT,
                             "grid_supply_rate": 30 * CT, "feed_in_rate": 0}]
    assert got["slots_balanced"] == [
        {"participant": h, "slot": slot, "meter": m, "import_energy": 0,
         "export_energy": 7 * WH, "sold": 10 * WH, "bought": 0,
         "shortfall_charge": 3 * WH * 40, "excess_charge": 0, "surplus_credit": 0}]
    assert got["slots_unmetered"] == [
        {"participant": h, "slot": slot - SLOT, "sold": 0, "bought": 0}]
    assert got["periods"] == [{"period": 1, "end_slot": slot + SLOT}]
    assert got["statements_paid"] == [{"period": 1, "participant": h}]
    assert (where["block_number"], where["tx_hash"]) == (
        last["blockNumber"], last["transactionHash"].to_0x_hex())


def test_open_period_bills_equal_the_contracts(deployed: Deployed, index_url: str) -> None:
    """On the real chain: a metered house trades and is balanced (a shortfall charged) in
    period 1, the operator closes it, and the house trades and is balanced again (an excess
    charged, a surplus credited) in the open period. The index's open-period bill of the
    house, of its counterparty and of the grid operator (the other side of all balancing)
    equals the contract's own at the indexed block: ``billOf`` and ``balancingOf`` less every
    closed period's ``statementOf``, read through pilotchain.settlement's typed reads."""
    w3 = connect(deployed.net.rpc_url)
    operator = deployed.net.keys.role("operator").unlock()
    contract = settlement_contract(w3, deployed.deployment)
    admin = Sender(w3, operator)
    recorder = Sender(w3, deployed.net.keys.role("bridge").unlock())
    house, market, neighbour = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    pid = uuid_to_bytes32(house)
    meter_key = Account.create()
    meter = meter_id(uuid.uuid4())
    send_calls(w3, admin, contract,
               ("registerMeter", meter, meter_key.address, pid, pid),
               ("setCloseDelay", 0),
               ("setRates", 0, 40 * CT, 30 * CT, 5 * CT),
               ("grantRole", contract.functions.READER_ROLE().call(), operator.address))
    domain = Domain(w3.eth.chain_id, contract.address)
    first = w3.eth.get_block("latest")["timestamp"] // SLOT * SLOT - 3 * SLOT
    second = first + SLOT

    def trade(slot: int, seller: uuid.UUID, buyer: uuid.UUID, wh: int, ct: int
              ) -> tuple[Any, ...]:
        record = TradeRecord(uuid.uuid4(), market, slot, seller, buyer, seller, buyer,
                             wh * WH, ct * CT + 7, 3)
        return ("recordTrades", [record.as_contract_tuple()])

    def read_and_close(slot: int, registers: dict[int, tuple[int, int]]
                       ) -> list[tuple[Any, ...]]:
        readings = [sign_reading(MeterReading(meter, time, imported, exported), meter_key,
                                 domain) for time, (imported, exported) in registers.items()]
        return [("submitReadings", [r.as_contract_tuple() for r in readings]),
                ("closeSlots", [pid], [slot])]

    # Each sender's calls in one batch, awaited before the other's that depend on them: the
    # operator closes a slot once the bridge's trades of it are in.
    send_calls(w3, recorder, contract,
               trade(first, house, neighbour, 10, 25))  # period 1: sold 10 Wh, exported 7
    send_calls(w3, admin, contract,
               *read_and_close(first, {first: (1000, 500), second: (1000, 507)}),
               ("closePeriod", second))
    send_calls(w3, recorder, contract,
               trade(second, house, neighbour, 8, 20),  # the open period: sold 8 Wh, exported 11
               trade(second, neighbour, house, 20, 50))  # bought 20 Wh, imported 26
    send_calls(w3, admin, contract, *read_and_close(second, {second + SLOT: (1026, 518)}))

    settings = portal_settings(deployed, index_url, confirmations=0)
    indexer = indexed(settings)
    assert indexer.cursor is not None
    db = Database(index_url)
    try:
        bills = queries.open_period_bills(db)
    finally:
        db.close()
    for who, raw in ((str(house), pid), (str(neighbour), uuid_to_bytes32(neighbour)),
                     (OPERATOR_ID, OPERATOR)):
        assert bills[who] == open_period_bill_on_chain(
            deployed.net.rpc_url, deployed.deployment, raw, indexer.cursor.block_number), who
    mine = bills[str(house)]
    assert (mine["money_receivable"], mine["money_payable"]) == (20 * CT + 7, 50 * CT + 7)
    assert mine["balancing_charges"] == 6 * WH * 30 and mine["balancing_credits"] == 3 * WH * 5
    # Period 1's shortfall is on its statement, not in the open period's bill.
    assert contract.functions.statementOf(1, pid).call()[4] == 3 * WH * 40


CRASH_BETWEEN_ROWS_AND_CURSOR = """
import os
from pilotchain.settings import load_environment
from portal.config import PortalSettings
from portal import queries
from portal.db import Block, Database
from portal.indexer import Indexer

insert_rows = Database._insert_rows

def crash_after_the_rows(self, cur, table, rows):
    insert_rows(self, cur, table, rows)
    if table == "trades":
        os._exit(9)  # the rows are written and the cursor moved, nothing committed yet

Database._insert_rows = crash_after_the_rows
Indexer(PortalSettings.from_env(load_environment())).catch_up()
"""


def test_totals_add_up_block_sums_kept_with_the_trades_and_filled_on_upgrade(
        index_url: str) -> None:
    """The operator's totals come from per-block sums the indexer writes with each page's
    trades and deletes with them on a reorganisation; an index made before the sums
    (schema version 2) gets them from its trades when migrated. Amounts beyond 64 bits."""
    rng = random.Random(8)

    def trade(block: int, index: int) -> Row:
        ids = {c: str(uuid.UUID(int=rng.getrandbits(128), version=4)) for c in (
            "trade_id", "market", "seller", "buyer", "seller_origin", "buyer_origin")}
        return Row("trades", block, index, "0x" + "ab" * 32, {
            **ids, "time_slot": 900 * block, "energy": rng.getrandbits(100),
            "price": rng.getrandbits(120), "fee": 0})

    def block(number: int) -> Block:
        return Block(number, f"0x{number:064x}", f"0x{number - 1:064x}")

    def expected(rows: list[Row]) -> dict[str, int]:
        return {"trades": len(rows), "energy": sum(r.values["energy"] for r in rows),
                "price": sum(r.values["price"] for r in rows)}

    rows = [trade(number, index) for number in (1, 2, 4) for index in range(3)]
    db = Database(index_url)
    try:
        db.migrate()
        cursor = db.start(1, "0x" + "11" * 20, block(0))
        cursor = db.commit_page(cursor, rows[:6], [block(1), block(2)], 10)
        cursor = db.commit_page(cursor, rows[6:], [block(3), block(4)], 10)
        assert queries.totals(db) == expected(rows)
        db.rewind(cursor, block(2))
        assert queries.totals(db) == expected(rows[:6])
        db.execute("DROP TABLE trade_sums")
        db.execute("UPDATE schema_version SET version = 2")
        assert db.migrate() == 2
        assert queries.totals(db) == expected(rows[:6])
    finally:
        db.close()


def bill_reference(rows: list[Row], period: int | None) -> dict[str, dict[str, int]]:
    """Each participant's bill of ``period`` (None: the open one) computed from the event
    rows the plain way, as the contract's statement counts it: every trade and balanced slot
    after PeriodClosed(period - 1) and before PeriodClosed(period), in recording order."""
    ordered = sorted(rows, key=lambda r: (r.block_number, r.log_index))
    closes = [(r.block_number, r.log_index) for r in ordered if r.table == "periods"]
    wanted = len(closes) + 1 if period is None else period
    bills: dict[str, dict[str, int]] = {}

    def add(who: str, **amounts: int) -> None:
        bill = bills.setdefault(who, dict.fromkeys(
            ("energy_sold", "energy_bought", "money_receivable", "money_payable",
             "balancing_charges", "balancing_credits"), 0))
        for name, amount in amounts.items():
            bill[name] += amount

    for row in ordered:
        if sum(close < (row.block_number, row.log_index) for close in closes) + 1 != wanted:
            continue
        v = row.values
        if row.table == "trades":
            add(v["seller"], energy_sold=v["energy"], money_receivable=v["price"])
            add(v["buyer"], energy_bought=v["energy"], money_payable=v["price"])
        elif row.table == "slots_balanced":
            charges, credits = v["shortfall_charge"] + v["excess_charge"], v["surplus_credit"]
            if charges or credits:
                add(v["participant"], balancing_charges=charges, balancing_credits=credits)
                add(OPERATOR_ID, balancing_charges=credits, balancing_credits=charges)
    return {who: {**bill, "net": bill["money_receivable"] + bill["balancing_credits"]
                  - bill["money_payable"] - bill["balancing_charges"]}
            for who, bill in bills.items()}


def test_open_period_bills_are_running_sums_kept_per_block_and_filled_on_upgrade(
        index_url: str) -> None:
    """Each participant's bill of the open period comes from the running sums the indexer
    writes with each page (one row per participant and block, the period the contract's: a
    trade after PeriodClosed in the same block is in the new one); a reorganisation deletes
    its blocks' rows and the bills are those of the blocks left; rows below the reach of any
    reorganisation are pruned to one a participant and period; an index made before the
    sums (schema version 6) gets them from its trades and slots when migrated. Amounts
    beyond 64 bits, on both engines."""
    rng = random.Random(12)
    people = [str(uuid.UUID(int=n)) for n in range(1, 6)]

    def events(number: int, close: int | None = None) -> list[Row]:
        found = []
        for index in range(4 if close else rng.randrange(1, 5)):
            seller, buyer = rng.sample(people, 2)
            found.append(Row("trades", number, index, f"0x{number:064x}", {
                "trade_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "market": people[0], "seller": seller, "buyer": buyer,
                "seller_origin": seller, "buyer_origin": buyer, "time_slot": 900 * number,
                "energy": rng.getrandbits(100), "price": rng.getrandbits(110), "fee": 0}))
        if number % 3 == 0:
            found.append(Row("slots_balanced", number, 10, f"0x{number:064x}", {
                "participant": rng.choice(people), "slot": 900 * number, "meter": people[0],
                "import_energy": 1, "export_energy": 2, "sold": 3, "bought": 4,
                "shortfall_charge": rng.getrandbits(90), "excess_charge": rng.getrandbits(90),
                "surplus_credit": rng.getrandbits(90) if number % 2 else 0}))
        if close is not None:  # between trades of the same block
            found.append(Row("periods", number, 2, f"0x{number:064x}",
                             {"period": close, "end_slot": 900 * number}))
        return found

    def block(number: int, fork: int = 0) -> Block:
        return Block(number, f"0x{fork:02x}{number:062x}", f"0x{fork:02x}{number - 1:062x}")

    def assert_bills_are_the_newest_sums(db: Database) -> None:
        """participant_bills, which the pages read, holds each participant's and period's
        newest running sums, whatever was pruned or rewound."""
        newest = db.fetch("SELECT period, participant, money_receivable, balancing_charges "
                          "FROM participant_sums s WHERE block_number = (SELECT "
                          "MAX(block_number) FROM participant_sums t WHERE t.period = s.period "
                          "AND t.participant = s.participant)")
        bills = db.fetch("SELECT period, participant, money_receivable, balancing_charges "
                         "FROM participant_bills")
        assert sorted((int(a), str(b), int(c), int(d)) for a, b, c, d in bills) == \
            sorted((int(a), str(b), int(c), int(d)) for a, b, c, d in newest)

    rows: list[Row] = []
    keep = 4  # block hashes kept: a reorganisation reaches back at most 3 blocks
    db = Database(index_url)
    try:
        db.migrate()
        cursor = db.start(1, "0x" + "11" * 20, block(0))
        for number in range(1, 13):
            page = events(number, close={4: 1, 9: 2}.get(number))
            rows += page
            cursor = db.commit_page(cursor, page, [block(number)], keep)
            assert queries.open_period_bills(db) == bill_reference(rows, None), number
            assert_bills_are_the_newest_sums(db)
        # Period 2 closed in block 9: its bills stay as its statements read.
        period_2 = db.fetch("SELECT participant, money_payable FROM participant_sums s "
                            "WHERE period = 2 AND block_number = (SELECT MAX(block_number) "
                            "FROM participant_sums t WHERE t.period = 2 "
                            "AND t.participant = s.participant)")
        assert {str(p): int(v) for p, v in period_2} == {
            who: bill["money_payable"] for who, bill in bill_reference(rows, 2).items()}
        # Pruned: below the oldest block a rewind can reach (12 - 4 + 1), one row per
        # participant and period.
        old = db.fetch("SELECT period, participant, COUNT(*) FROM participant_sums "
                       "WHERE block_number < 9 GROUP BY period, participant")
        assert old and {int(n) for _, _, n in old} == {1}
        # A reorganisation back to block 10 (which a rewind may reach): blocks 11 and 12 go.
        cursor = db.rewind(cursor, block(10))
        rows = [r for r in rows if r.block_number <= 10]
        assert queries.open_period_bills(db) == bill_reference(rows, None)
        assert_bills_are_the_newest_sums(db)
        for number in (11, 12, 13):  # the heavier chain's blocks, other trades
            page = events(number)
            rows += page
            cursor = db.commit_page(cursor, page, [block(number, fork=1)], keep)
        assert queries.open_period_bills(db) == bill_reference(rows, None)
        # Back to before the sums: the upgrade fills them from the events it holds.
        db.execute("DROP TABLE participant_sums")
        db.execute("DROP TABLE participant_bills")
        db.execute("UPDATE schema_version SET version = 6")
        assert db.migrate() == 6
        assert queries.open_period_bills(db) == bill_reference(rows, None)
        assert_bills_are_the_newest_sums(db)
        old = db.fetch("SELECT period, participant, COUNT(*) FROM participant_sums "
                       "WHERE block_number < (SELECT MIN(number) FROM blocks) "
                       "GROUP BY period, participant")
        assert old and {int(n) for _, _, n in old} == {1}  # pruned below the kept hashes
        page = events(14, close=3)
        rows += page
        db.commit_page(cursor, page, [block(14, fork=1)], keep)
        assert queries.open_period_bills(db) == bill_reference(rows, None)
        assert bill_reference(rows, None)  # a trade after the close, in block 14
    finally:
        db.close()


def test_names_come_with_the_schema_upgrade_and_the_operators_win(index_url: str) -> None:
    """An index of schema version 5 (before names) is upgraded with empty name tables;
    gsy-e's names are recorded, the operator's override them and, cleared, give them back."""
    house, market = str(uuid.UUID(int=5)), str(uuid.UUID(int=6))
    db = Database(index_url)
    try:
        db.migrate()
        db.execute("DROP TABLE names")
        db.execute("DROP TABLE name_cursor")
        db.execute("UPDATE schema_version SET version = 5")
        assert db.migrate() == 5
        assert db.count("trades") == 0 and db.fetch("SELECT * FROM names") == []
        save_gsy_names(db, names_in_event({"trade": {
            "seller": {"name": "House 1", "uuid": house, "origin": "H1 PV",
                       "origin_uuid": str(uuid.UUID(int=7))},
            "buyer": {"name": "Bad\u0000name", "uuid": market, "origin": None,
                      "origin_uuid": None}}}))
        assert shown_names(db, [house, market, str(uuid.UUID(int=7))]) == {
            house: "House 1", str(uuid.UUID(int=7)): "H1 PV"}
        set_display_name(db, house, "Familie Weber")
        set_display_name(db, market, "Community market")
        save_gsy_names(db, {house: "House 1 (renamed in gsy-e)"})
        assert shown_names(db, [house, market]) == {house: "Familie Weber",
                                                    market: "Community market"}
        set_display_name(db, house, None)
        assert shown_names(db, [house]) == {house: "House 1 (renamed in gsy-e)"}
    finally:
        db.close()


def test_a_participants_trades_come_from_the_covering_indexes_as_the_reference_says(
        index_url: str) -> None:
    """A participant's trades (sold and bought, a trade with oneself once) in recording
    order, filtered by market and billing period, paged, against a reference computed from
    the rows; on SQLite both halves of the query read only their index (the pages and the
    CSV of 10,000 trades stay fast, benchmarks/portal_load.py)."""
    rng = random.Random(11)
    people = [f"0x{n:040x}" for n in range(1, 5)]
    trades = []
    for block in range(1, 31):
        for index in range(rng.randrange(0, 4)):
            seller, buyer = rng.choice(people), rng.choice(people)  # sometimes the same
            trades.append(Row("trades", block, index, f"0x{block:064x}", {
                "trade_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "market": rng.choice(("House 1", "Grid")), "seller": seller, "buyer": buyer,
                "seller_origin": "PV", "buyer_origin": "Load", "time_slot": 900 * block,
                "energy": rng.getrandbits(70), "price": rng.getrandbits(80), "fee": 0}))
    closes = [Row("periods", 10, 9, f"0x{10:064x}", {"period": 1, "end_slot": 9000}),
              Row("periods", 20, 9, f"0x{20:064x}", {"period": 2, "end_slot": 18000})]
    blocks = [Block(n, f"0x{n:064x}", f"0x{n - 1:064x}") for n in range(1, 31)]

    def reference(who: str, market: str | None, span: tuple[Any, Any]) -> list[str]:
        return [r.values["trade_id"] for r in sorted(trades, key=lambda r: (
            r.block_number, r.log_index)) if who in (r.values["seller"], r.values["buyer"])
            and market in (None, r.values["market"])
            and span[0] < (r.block_number, r.log_index) < span[1]]

    statements: list[str] = []
    db = Database(index_url)
    try:
        db.migrate()
        cursor = db.start(1, "0x" + "11" * 20, Block(0, f"0x{0:064x}", f"0x{-1:064x}"))
        db.commit_page(cursor, [*trades, *closes], blocks, 10)
        fetch = db.fetch
        db.fetch = lambda sql, params=(): statements.append(sql) or fetch(sql, params)  # type: ignore[method-assign]
        first, second = (10, 9), (20, 9)  # where PeriodClosed(1) and (2) were logged
        spans = {None: ((0, 0), (99, 0)), 1: ((0, 0), first), 2: (first, second),
                 "open": (second, (99, 0))}
        for who in people:
            for market in (None, "House 1"):
                for period, span in spans.items():
                    expected = reference(who, market, span)
                    pages = [queries.trades_of(
                        db, who, market=market, period=period if period != "open" else None,
                        open_period=period == "open", page=page, per_page=3)
                        for page in range(1, len(expected) // 3 + 2)]
                    assert {p.total for p in pages} == {len(expected)}
                    assert [r["trade_id"] for p in pages for r in p.rows] == expected
        assert any(r.values["seller"] == r.values["buyer"] for r in trades)
        if db.dialect == "sqlite":
            sql = next(s for s in statements if "UNION ALL" in s and "LIMIT" in s)
            plan = " ".join(str(step[-1]) for step in fetch(
                "EXPLAIN QUERY PLAN " + sql, [people[0], people[0], people[0], 1, 0]))
            assert "COVERING INDEX trades_of_seller" in plan, plan
            assert "COVERING INDEX trades_of_buyer" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
    finally:
        db.close()


def test_pages_the_node_refuses_as_too_large_are_read_in_fewer_blocks(
        deployed: Deployed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """geth refuses a batch answer over 25 MB ("response too large"), which takes ~20,000
    trades to produce for real; the refusal is injected for pages of more than two blocks.
    The indexer halves its page until the answer fits, indexes everything once, and gives
    up with a sentence only when a single block is refused."""
    url = f"sqlite:///{tmp_path / 'portal.sqlite3'}"
    receipts = record_trades(deployed, [parse_event(json.loads(line))
                                        for line in synthesise(60, seed=9)], batch=10)
    blocks = {receipt["blockNumber"] for receipt in receipts}
    settings = portal_settings(deployed, url, confirmations=0, page_blocks=8)
    wait_confirmed(deployed, max(max(blocks), deployed.deployment.block_number + 20), 0)
    indexer = Indexer(settings)
    real_page = indexer._page
    spans: list[int] = []

    def refusing(start: int, end: int) -> Any:
        spans.append(end - start + 1)
        if end - start + 1 > limit:
            raise NodeRefused("Reading blocks failed: response too large.", "response too large")
        return real_page(start, end)

    monkeypatch.setattr(indexer, "_page", refusing)
    limit = 2
    try:
        indexer.catch_up()
        assert indexer.db is not None
        assert indexer.db.rows("trades") == chain_trade_rows(deployed)
        assert max(spans) == 8 and 4 in spans and max(spans[spans.index(4) + 1:]) <= 2
        assert indexer.span == settings.page_blocks  # caught up: back to full pages
        limit = 0
        deployed.net.wait_for_block(indexer.cursor.block_number + 1)  # type: ignore[union-attr]
        with pytest.raises(BlockTooLarge, match="alone holds more events than the node"):
            indexer.catch_up()
    finally:
        indexer.close()


def test_a_crash_between_rows_and_cursor_leaves_nothing_half_indexed(
        deployed: Deployed, index_url: str, tmp_path: Path) -> None:
    records = [parse_event(json.loads(line)) for line in synthesise(300, seed=5)]
    receipts = record_trades(deployed, records, batch=100)
    settings = portal_settings(deployed, index_url, confirmations=0)
    env = IndexerProcess(settings, tmp_path / "log").env()
    crashed = subprocess.run([sys.executable, "-c", CRASH_BETWEEN_ROWS_AND_CURSOR], env=env,
                             cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                             check=False)
    assert crashed.returncode == 9, crashed.stderr

    db = Database(index_url)
    try:
        cursor = db.cursor()
        assert cursor is not None
        assert cursor.block_number == deployed.deployment.block_number - 1
        assert db.count("trades") == 0
        indexed(settings)
        assert db.count("trades") == len(records)
        assert {row["trade_id"] for row in db.rows("trades")} == \
            {str(record.trade_id) for record in records}
        last = db.cursor()
        assert last is not None and last.block_number >= receipts[-1]["blockNumber"]
    finally:
        db.close()


def test_a_database_of_another_deployment_is_refused(deployed: Deployed, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'portal.sqlite3'}"
    settings = portal_settings(deployed, url, confirmations=0)
    indexed(settings)
    db = Database(url)
    try:
        with pytest.raises(WrongDatabase, match="indexes the contract"):
            db.start(deployed.deployment.chain_id + 1, deployed.deployment.address,
                     db.recent_blocks()[0])
    finally:
        db.close()
    result = subprocess.run(
        [sys.executable, "-m", "portal", "--once"],
        env={**IndexerProcess(settings, tmp_path / "log").env(), "CHAIN_ID": "1",
             "DEPLOYMENT_FILE": str(tmp_path / "missing.json")},
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("pilotchain-portal-indexer: ")
    assert "Traceback" not in result.stderr


def test_check_answers_once_an_indexer_has_started_the_index(
        deployed: Deployed, index_url: str, tmp_path: Path) -> None:
    """``--check``, Compose's health check: 1 with a sentence on an index nobody started
    (nothing written on the chain's behalf), 0 once an indexer has recorded its cursor."""
    settings = portal_settings(deployed, index_url, confirmations=0)

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "portal", "--check"],
                              env=IndexerProcess(settings, tmp_path / "log").env(),
                              cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
                              check=False)

    before = check()
    assert (before.returncode, before.stderr.strip()) == (1, (
        "pilotchain-portal-indexer: no indexer has started the index "
        f"{masked_url(index_url)} yet.")), before.stderr
    cursor = indexed(settings).cursor
    assert cursor is not None
    after = check()
    assert after.returncode == 0, after.stderr
    assert after.stdout.strip() == (
        f"pilotchain-portal-indexer: the index holds {deployed.deployment.address} up to "
        f"block {cursor.block_number}.")


KILLED_TRADES = 10_000


@pytest.mark.slow
def test_kill_9_during_10000_trades_indexes_each_exactly_once(
        deployed: Deployed, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'portal.sqlite3'}"
    # One block per page: many commits, so the kills land between and inside them.
    settings = portal_settings(deployed, url, page_blocks=1)
    records = [parse_event(json.loads(line)) for line in synthesise(KILLED_TRADES, seed=11)]
    process = IndexerProcess(settings, tmp_path / "indexer.log")
    db = Database(url)
    receipts: list[dict[str, Any]] = []
    recorder = threading.Thread(target=lambda: receipts.extend(record_trades(deployed, records)))
    rng = random.Random(11)
    kills = sorted(rng.sample(range(500, KILLED_TRADES - 500), 3))

    def start(starts: int) -> None:
        """Start the indexer and wait until it has said where it resumes, so that the next
        kill hits a running indexer, not one still starting."""
        process.start()
        wait_for(lambda: process.log_tail(100_000).count(" from block ") > starts or None,
                 timeout=START_SECONDS, what=f"the indexer's start number {starts + 1}\n"
                                             f"{process.log_tail()}")

    try:
        start(0)
        recorder.start()
        for number, threshold in enumerate(kills, start=1):
            wait_for_work(deployed.net, lambda: _indexed_trades(db) >= threshold,  # noqa: B023
                          progress=lambda: _indexed_trades(db),
                          what=f"{threshold} trades indexed\n{process.log_tail()}")
            process.kill()
            start(number)
        # Its receipts are awaited in blocks; this bound is only against a hung connection.
        recorder.join(timeout=900)
        assert receipts, "recording the trades failed"
        wait_for_work(deployed.net, lambda: _indexed_trades(db) == KILLED_TRADES,
                      progress=lambda: _indexed_trades(db),
                      what=f"all {KILLED_TRADES} trades indexed\n{process.log_tail()}")
        rows = db.rows("trades")
    finally:
        process.stop()
        db.close()
    assert rows == chain_trade_rows(deployed)
    assert sorted(row["trade_id"] for row in rows) == sorted(str(r.trade_id) for r in records)
    log = process.log_tail(100_000)
    assert "Traceback" not in log
    # Started once and after each kill, each time resuming from its cursor.
    assert log.count(" from block ") == len(kills) + 1


def _indexed_trades(db: Database) -> int:
    """Trades in the index; 0 before the indexer has created its schema."""
    try:
        return db.count("trades")
    except DatabaseError:
        return 0

