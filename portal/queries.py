"""The web portal's reads of the index (the indexer's tables), one function per question.

Amounts come back as ints whatever the engine (SQLite keeps them as decimal text). A billing
period is a stretch of recording order, as on the contract: period ``p`` holds the events
after ``PeriodClosed(p - 1)`` and before ``PeriodClosed(p)`` (by block and log index); the
open period everything after the last one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from portal import sums
from portal.db import AMOUNT_COLUMNS, COLUMNS, Database
from portal.schema import PARTICIPANT_SUMS

TRADE_COLUMNS = COLUMNS["trades"]
SLOT_COLUMNS = COLUMNS["slots_balanced"]


@dataclass(frozen=True)
class TradePage:
    rows: list[dict[str, Any]]
    total: int
    page: int
    per_page: int


def _rows(table: str, columns: Sequence[str], found: list[tuple[Any, ...]]
          ) -> list[dict[str, Any]]:
    amounts = AMOUNT_COLUMNS[table]
    return [{c: int(v) if c in amounts else v for c, v in zip(columns, row, strict=True)}
            for row in found]


def period_bounds(db: Database, period: int | None
                  ) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """The (block, log index) after which and before which period ``period``'s events lie
    (None: unbounded); ``period`` None is the open period."""
    closes = [(int(b), int(i)) for b, i in db.fetch(
        "SELECT block_number, log_index FROM periods ORDER BY period")]
    if period is None:
        return (closes[-1] if closes else None), None
    if not 1 <= period <= len(closes):
        raise LookupError(period)
    return (closes[period - 2] if period > 1 else None), closes[period - 1]


def _position(after: tuple[int, int] | None, before: tuple[int, int] | None
              ) -> tuple[str, list[Any]]:
    sql, params = "", []
    if after is not None:
        sql += " AND (block_number > ? OR (block_number = ? AND log_index > ?))"
        params += [after[0], after[0], after[1]]
    if before is not None:
        sql += " AND (block_number < ? OR (block_number = ? AND log_index < ?))"
        params += [before[0], before[0], before[1]]
    return sql, params


def trades_of(db: Database, participant: str | None, *, market: str | None = None,
              period: int | None = None, open_period: bool = False, page: int = 1,
              per_page: int = 50) -> TradePage:
    """The trades ``participant`` sold or bought (every trade for None), in recording
    order, one page; filtered by market and billing period (``period``, or the open one)."""
    filters, params = "", []
    if market:
        filters += " AND market = ?"
        params.append(market)
    if period is not None or open_period:
        sql, extra = _position(*period_bounds(db, period))
        filters += sql
        params += extra
    columns = ", ".join(TRADE_COLUMNS)
    if participant is None:
        source = f"SELECT {columns} FROM trades WHERE 1 = 1{filters}"
        source_params = params
    else:
        # Sold, then bought (a trade with oneself once), each a range of an index that holds
        # every column in recording order (schema version 4), merged by the ORDER BY: no
        # table reads, no sort of the participant's trades.
        source = (f"SELECT {columns} FROM trades WHERE seller = ?{filters} UNION ALL "
                  f"SELECT {columns} FROM trades WHERE buyer = ? AND seller <> ?{filters}")
        source_params = [participant, *params, participant, participant, *params]
    total = int(db.fetch(f"SELECT COUNT(*) FROM ({source}) AS found", source_params)[0][0])
    found = db.fetch(f"{source} ORDER BY block_number, log_index LIMIT ? OFFSET ?",
                     [*source_params, per_page, (page - 1) * per_page])
    return TradePage(_rows("trades", TRADE_COLUMNS, found), total, page, per_page)


def markets_of(db: Database, participant: str) -> list[str]:
    """The markets ``participant`` traded in."""
    return [str(m) for (m,) in db.fetch(
        "SELECT DISTINCT market FROM trades WHERE seller = ? OR buyer = ? ORDER BY market",
        (participant, participant))]


def balanced_slots(db: Database, participant: str | None, *, period: int | None = None,
                   open_period: bool = False) -> list[dict[str, Any]]:
    """Each closed, metered slot: measured and traded energy and its balancing amounts;
    those balanced in billing period ``period`` (or the open one) if asked."""
    where, params = ("WHERE participant = ?", [participant]) if participant else ("WHERE 1 = 1",
                                                                                  [])
    if period is not None or open_period:
        sql, extra = _position(*period_bounds(db, period))
        where += sql
        params += extra
    found = db.fetch(f"SELECT {', '.join(SLOT_COLUMNS)} FROM slots_balanced {where} "
                     "ORDER BY slot, block_number, log_index", params)
    return _rows("slots_balanced", SLOT_COLUMNS, found)


def unmetered_slots(db: Database, participant: str | None, *, period: int | None = None,
                    open_period: bool = False) -> list[dict[str, Any]]:
    """Slots closed without readings (nothing charged): what waits for the operator; those
    closed in billing period ``period`` (or the open one) if asked."""
    columns = COLUMNS["slots_unmetered"]
    where, params = ("WHERE participant = ?", [participant]) if participant else ("WHERE 1 = 1",
                                                                                  [])
    if period is not None or open_period:
        sql, extra = _position(*period_bounds(db, period))
        where += sql
        params += extra
    found = db.fetch(f"SELECT {', '.join(columns)} FROM slots_unmetered {where} "
                     "ORDER BY slot, participant", params)
    return _rows("slots_unmetered", columns, found)


def community_slots(db: Database, *, newest: int) -> list[dict[str, int]]:
    """The community's energy in each of the ``newest`` balanced slots, over its metered
    participants: imported and exported as measured, bought inside the community, and what
    the grid supplied beyond what was bought or took beyond what was sold (each
    participant's own, then added up: one's surplus does not cover another's excess on a
    bill)."""
    found = db.fetch(
        "SELECT slot, import_energy, export_energy, sold, bought FROM slots_balanced "
        "WHERE slot IN (SELECT DISTINCT slot FROM slots_balanced ORDER BY slot DESC LIMIT ?)",
        [newest])
    slots: dict[int, dict[str, int]] = {}
    for slot, imported, exported, sold, bought in found:
        row = slots.setdefault(int(slot), {"slot": int(slot), "participants": 0, "imported": 0,
                                           "exported": 0, "bought": 0, "from_grid": 0,
                                           "to_grid": 0})
        row["participants"] += 1
        row["imported"] += int(imported)
        row["exported"] += int(exported)
        row["bought"] += int(bought)
        row["from_grid"] += max(0, int(imported) - int(bought))
        row["to_grid"] += max(0, int(exported) - int(sold))
    return [slots[slot] for slot in sorted(slots)]


def registrations(db: Database) -> list[dict[str, Any]]:
    """Each participant's current wallet, from the latest wallet event of each."""
    latest: dict[str, dict[str, Any]] = {}
    for participant, wallet, action, block, tx_hash in db.fetch(
            "SELECT participant, wallet, action, block_number, tx_hash FROM wallet_events "
            "ORDER BY block_number, log_index"):
        if action == "registered":
            latest[participant] = {"participant": participant, "wallet": wallet,
                                   "block_number": block, "tx_hash": tx_hash}
        elif latest.get(participant, {}).get("wallet") == wallet:
            del latest[participant]
    return sorted(latest.values(), key=lambda row: str(row["participant"]))


def open_period_bills(db: Database) -> dict[str, dict[str, int]]:
    """Every participant's bill of the open billing period so far, as its statement will
    read when the period is closed: energy sold and bought, money receivable and payable,
    balancing charges and credits, and ``net`` (participants without any: none). One row a
    participant (``participant_bills``, which the indexer keeps, portal.sums); the open
    period is found in the same statement, so an indexer committing meanwhile cannot mix
    two periods."""
    found = db.fetch(f"SELECT participant, {', '.join(PARTICIPANT_SUMS)} FROM participant_bills "
                     "WHERE period = (SELECT COUNT(*) FROM periods) + 1")
    bills = {}
    for participant, *amounts in found:
        bill = {column: int(value) for column, value in zip(PARTICIPANT_SUMS, amounts,
                                                             strict=True)}
        bills[str(participant)] = {**bill, "net": sums.net(bill)}
    return bills


def meters(db: Database) -> list[dict[str, Any]]:
    """Every registered meter and, if deactivated, from when."""
    until = {str(m): int(u) for m, u in db.fetch(
        "SELECT meter, active_until FROM meters_deactivated")}
    return [{"meter": m, "participant": p, "signer": s, "home_area": h,
             "active_from": int(f), "active_until": until.get(str(m))}
            for m, p, s, h, f in db.fetch(
                "SELECT meter, participant, signer, home_area, active_from "
                "FROM meters_registered ORDER BY block_number, log_index")]


def totals(db: Database) -> dict[str, int]:
    """Trades recorded, energy and money traded, over everyone: added up from the sums of
    each block with trades, which the indexer keeps (reading all trades takes seconds at
    200,000)."""
    count = energy = price = 0
    for n, e, p in db.fetch("SELECT trades, energy, price FROM trade_sums"):
        count += int(n)
        energy += int(e)
        price += int(p)
    return {"trades": count, "energy": energy, "price": price}


def periods(db: Database) -> list[dict[str, int]]:
    return [{"period": int(p), "end_slot": int(e)} for p, e in db.fetch(
        "SELECT period, end_slot FROM periods ORDER BY period")]


def last_readings(db: Database) -> dict[str, dict[str, int]]:
    """Every meter's newest reading on chain: time and registers (one pass of the
    ``(meter, time)`` index)."""
    found: dict[str, dict[str, int]] = {}
    for meter, moment, imported, exported in db.fetch(
            "SELECT r.meter, r.time, r.import_wh, r.export_wh FROM readings r JOIN "
            "(SELECT meter, MAX(time) AS time FROM readings GROUP BY meter) newest "
            "ON r.meter = newest.meter AND r.time = newest.time"):
        found[str(meter)] = {"time": int(moment), "import_wh": int(imported),
                             "export_wh": int(exported)}
    return found


def meters_of(db: Database, participant: str) -> list[dict[str, Any]]:
    """The participant's meters, each with its newest reading on chain (None before any):
    time and the import and export registers in Wh."""
    found = []
    for meter in (m for m in meters(db) if m["participant"] == participant):
        last = db.fetch("SELECT time, import_wh, export_wh FROM readings WHERE meter = ? "
                        "ORDER BY time DESC LIMIT 1", (meter["meter"],))
        found.append({**meter, "last_reading": None if not last else {
            "time": int(last[0][0]), "import_wh": int(last[0][1]),
            "export_wh": int(last[0][2])}})
    return found
