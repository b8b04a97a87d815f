"""``pilotchain reconcile``: a gsy-e run's own books (its export) against the chain.

The researcher's check after a run: every trade gsy-e put into a market's books must be on
chain once, with its slot, parties, origins, energy and price, and the chain must hold
nothing else for the run's markets. gsy-e's export has no trade ids (see
:mod:`pilotchain.gsy_export`), so trades are matched on what it has, market by market:
slot, seller, buyer, their origins and energy exactly, and the rate within the export's
rounding (4 decimals). What is left over is paired, where one export row and one chain trade
of the same market and slot agree on most fields, into a *different* trade naming the
fields; the rest are *missing* (in gsy-e's books, not on chain) or *extra* (on chain, not in
gsy-e's books). A chain trade of a slot the export does not cover for every market kind of
its area (a settlement market still open when the run ended) is counted apart, as *not
exported*, not as a difference.

Only the run's markets (the export's areas with children) are read, so a stack that also
holds other runs' trades reconciles the same.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from web3 import Web3

from pilotchain.chain import contract_logs, read
from pilotchain.contract import Deployment
from pilotchain.gsy_export import RATE_DECIMALS, ExportedTrade, GsyExport
from pilotchain.trades import (
    ENERGY_DECIMALS,
    PRICE_DECIMALS,
    TRADE_SETTLED_TOPIC,
    TradeRecord,
    decode_trade_settled,
    format_time_slot,
)

# An exported rate is gsy-e's rate (rounded to 8 decimals) rounded to 4: within this of the
# chain's price / energy.
RATE_TOLERANCE = Decimal("0.5e-4") + Decimal("0.5e-8")
# Fields compared, in the order differences name them.
FIELDS = ("seller", "seller origin", "buyer", "buyer origin", "energy", "rate")
# A leftover export row and chain trade of the same market and slot are one trade that
# differs when at least this many of FIELDS agree (else: one missing, one extra).
PAIRING_QUORUM = 4


@dataclass(frozen=True)
class Difference:
    kind: str  # "missing", "extra", "different"
    market: str
    time_slot: str
    detail: str
    exported: str = ""  # the export's file:line
    trade_id: str = ""  # the chain's trade id


@dataclass
class MarketTally:
    market: uuid.UUID
    name: str
    exported: int = 0
    on_chain: int = 0
    matched: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    not_exported: int = 0


@dataclass
class Reconciliation:
    run: str
    markets: list[MarketTally] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    other_trades: int = 0  # on chain, in no market of this run

    @property
    def ok(self) -> bool:
        return not self.differences

    def total(self, attribute: str) -> int:
        return sum(int(getattr(tally, attribute)) for tally in self.markets)


def chain_trades(w3: Web3, url: str, deployment: Deployment, *, to_block: int | None = None,
                 progress: Callable[[str], None] = lambda _: None) -> list[TradeRecord]:
    """Every trade the deployment settled, from its TradeSettled logs."""
    head = to_block if to_block is not None else read(url, "Reading the head",
                                                      lambda: w3.eth.block_number)
    records: list[TradeRecord] = []
    for logs in contract_logs(w3, url, deployment.address, deployment.block_number, head,
                              topics=[TRADE_SETTLED_TOPIC]):
        records += [decode_trade_settled(log) for log in logs]
        progress(f"read {len(records)} trades up to block {head}")
    return records


def reconcile(export: GsyExport, chain: Iterable[TradeRecord]) -> Reconciliation:
    """Compare the export with the chain's trades, market by market."""
    markets = export.markets
    result = Reconciliation(str(export.directory))
    on_chain: dict[uuid.UUID, list[TradeRecord]] = defaultdict(list)
    for record in chain:
        if record.market in markets:
            on_chain[record.market].append(record)
        else:
            result.other_trades += 1
    exported: dict[uuid.UUID, list[ExportedTrade]] = defaultdict(list)
    for trade in export.trades:
        exported[trade.market].append(trade)
    for market in sorted(markets, key=lambda key: markets[key].path):
        tally = MarketTally(market, " / ".join(markets[market].path),
                            len(exported[market]), len(on_chain[market]))
        _reconcile_market(export, tally, exported[market], on_chain[market],
                          result.differences)
        result.markets.append(tally)
    return result


def _reconcile_market(export: GsyExport, tally: MarketTally, rows: Sequence[ExportedTrade],
                      records: Sequence[TradeRecord], differences: list[Difference]) -> None:
    waiting: dict[tuple[object, ...], list[TradeRecord]] = defaultdict(list)
    for record in records:
        waiting[_key(record.time_slot, record.seller, record.seller_origin, record.buyer,
                     record.buyer_origin, record.energy)].append(record)
    left_rows = []
    for row in rows:
        candidates = waiting.get(_key(row.time_slot, row.seller, row.seller_origin, row.buyer,
                                      row.buyer_origin, row.energy), [])
        match = next((r for r in candidates if _rate_agrees(row.rate, r)), None)
        if match is None:
            left_rows.append(row)
            continue
        candidates.remove(match)
        tally.matched += 1
    left_records = [record for group in waiting.values() for record in group]
    by_slot: dict[int, list[TradeRecord]] = defaultdict(list)
    for record in left_records:
        by_slot[record.time_slot].append(record)
    for row in left_rows:
        pool = by_slot[row.time_slot]
        best = max(pool, key=lambda record: _agreeing(row, record), default=None)
        slot = format_time_slot(row.time_slot)
        if best is not None and _agreeing(row, best) >= PAIRING_QUORUM:
            pool.remove(best)
            tally.different += 1
            differs = "; ".join(f"{name}: export {want}, chain {got}"
                                for name, want, got in _compare(export, row, best)
                                if want != got)
            differences.append(Difference("different", tally.name, slot, differs, row.source,
                                          str(best.trade_id)))
        else:
            tally.missing += 1
            differences.append(Difference(
                "missing", tally.name, slot, f"{_describe(export, row)} is in gsy-e's books, "
                "not on chain", row.source))
    for record in (record for pool in by_slot.values() for record in pool):
        slot = format_time_slot(record.time_slot)
        if not export.covers(record.market, record.time_slot):
            tally.not_exported += 1
            continue
        tally.extra += 1
        differences.append(Difference(
            "extra", tally.name, slot, f"{_describe(export, record)} is on chain, not in "
            "gsy-e's books", trade_id=str(record.trade_id)))


def _key(*parts: object) -> tuple[object, ...]:
    return parts


def _chain_rate(record: TradeRecord) -> Decimal:
    if record.energy == 0:
        return Decimal(0)
    return (Decimal(record.price).scaleb(-PRICE_DECIMALS)
            / Decimal(record.energy).scaleb(-ENERGY_DECIMALS))


def _rate_agrees(rate: Decimal, record: TradeRecord) -> bool:
    return abs(_chain_rate(record) - rate) <= RATE_TOLERANCE


def _values(export: GsyExport, row: ExportedTrade | TradeRecord) -> list[str]:
    energy = f"{Decimal(row.energy).scaleb(-ENERGY_DECIMALS).normalize():f} kWh"
    if isinstance(row, ExportedTrade):
        rate = f"{row.rate:f}"
    else:
        rate = f"{round(_chain_rate(row), RATE_DECIMALS):f}"
    return [export.name_of(row.seller), export.name_of(row.seller_origin),
            export.name_of(row.buyer), export.name_of(row.buyer_origin), energy,
            f"{rate} ct/kWh"]


def _compare(export: GsyExport, row: ExportedTrade, record: TradeRecord
             ) -> list[tuple[str, str, str]]:
    want, got = _values(export, row), _values(export, record)
    if _rate_agrees(row.rate, record):
        got[-1] = want[-1]  # equal within the export's rounding
    return list(zip(FIELDS, want, got, strict=True))


def _agreeing(row: ExportedTrade, record: TradeRecord) -> int:
    return sum((row.seller == record.seller, row.seller_origin == record.seller_origin,
                row.buyer == record.buyer, row.buyer_origin == record.buyer_origin,
                row.energy == record.energy, _rate_agrees(row.rate, record)))


def _describe(export: GsyExport, row: ExportedTrade | TradeRecord) -> str:
    seller, seller_origin, buyer, buyer_origin, energy, rate = _values(export, row)
    return (f"{seller} ({seller_origin}) -> {buyer} ({buyer_origin}), {energy} at {rate}")
