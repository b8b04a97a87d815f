"""A participant's billing period at a glance, from the index: what it bought from the
community and at what price, what the grid supplied, what it sold, what trading in the
community saved or earned against the operator's rates, each balancing charge or credit with
its slot and the energies that explain it, and the net.

Amounts are the contract's integers (energy kWh * 10**18, money euro cents * 10**18, rates
euro cents per kWh * 10**18). A billing period is a stretch of recording order
(``portal.queries``): its trades and the slots balanced in it.

- *From the grid*: the energy the meters measured beyond what was bought (the excess the
  contract charges at the grid-supply rate); *to the grid*: exported beyond what was sold.
- *Savings*: what the energy bought from the community would have cost at the grid-supply
  rate of its slot, less what it cost; *earned*: what selling brought, less what the same
  energy would have brought at the feed-in rate. Each rate as the contract applies it to the
  slot (``ratesAt``); the products are summed exactly and divided once.
- *Self-sufficiency*: of the energy the participant drew, bought from the community plus
  what the grid supplied beyond it, the share the community supplied, in basis points
  (10,000 = all of it; ``None`` when it drew nothing). Energy made and used behind the
  meter never shows on a bill and is not counted.
- *Net*: receivable + credits - payable - charges, the statement's own formula, so for a
  closed period it equals ``statementOf``'s net.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from portal import queries
from portal.db import Database

SCALE = 10**18


@dataclass(frozen=True)
class Rates:
    """The operator's rates from ``from_slot`` on."""

    from_slot: int
    shortfall: int
    grid_supply: int
    feed_in: int


def rates_history(db: Database) -> list[Rates]:
    return [Rates(int(f), int(s), int(g), int(i)) for f, s, g, i in db.fetch(
        "SELECT from_slot, shortfall_rate, grid_supply_rate, feed_in_rate FROM rates "
        "ORDER BY from_slot, block_number, log_index")]


def rates_at(history: list[Rates], slot: int) -> Rates:
    """The rates that apply to ``slot`` (all 0 before the first change), as ``ratesAt``."""
    index = bisect_right([r.from_slot for r in history], slot)
    return history[index - 1] if index else Rates(0, 0, 0, 0)


def balancing_lines(slots: list[dict[str, Any]], history: list[Rates]
                    ) -> list[dict[str, Any]]:
    """Each charge or credit of ``slots``: its kind, the energies that explain it, the rate
    and the amount the contract booked."""
    lines = []
    for slot in slots:
        rates = rates_at(history, int(slot["slot"]))
        sold, bought = int(slot["sold"]), int(slot["bought"])
        exported, imported = int(slot["export_energy"]), int(slot["import_energy"])
        base = {"slot": int(slot["slot"]), "tx_hash": slot["tx_hash"]}
        if int(slot["shortfall_charge"]):
            lines.append({**base, "kind": "shortfall", "traded": sold, "measured": exported,
                          "deviation": sold - exported, "rate": rates.shortfall,
                          "amount": int(slot["shortfall_charge"])})
        if int(slot["excess_charge"]):
            lines.append({**base, "kind": "excess", "traded": bought, "measured": imported,
                          "deviation": imported - bought, "rate": rates.grid_supply,
                          "amount": int(slot["excess_charge"])})
        if int(slot["surplus_credit"]):
            lines.append({**base, "kind": "surplus", "traded": sold, "measured": exported,
                          "deviation": exported - sold, "rate": rates.feed_in,
                          "amount": int(slot["surplus_credit"])})
    return lines


def self_sufficiency(community: int, from_grid: int) -> int | None:
    """The community's share of ``community + from_grid`` in basis points, rounded half up
    (``None`` for nothing drawn)."""
    drawn = community + from_grid
    return None if drawn == 0 else (community * 20_000 + drawn) // (2 * drawn)


def month(db: Database, participant: str, *, period: int | None, open_period: bool
          ) -> dict[str, Any]:
    """The summary of ``participant``'s billing period ``period`` (or the open one)."""
    trades = queries.trades_of(db, participant, period=period, open_period=open_period,
                               page=1, per_page=10**9).rows
    history = rates_history(db)
    bought = paid = sold = received = grid_value = feed_in_value = 0
    for trade in trades:
        energy, price = int(trade["energy"]), int(trade["price"])
        rates = rates_at(history, int(trade["time_slot"]))
        if trade["seller"] == participant:
            sold += energy
            received += price
            feed_in_value += energy * rates.feed_in
        if trade["buyer"] == participant:
            bought += energy
            paid += price
            grid_value += energy * rates.grid_supply
    slots = queries.balanced_slots(db, participant, period=period, open_period=open_period)
    charges = sum(int(s["shortfall_charge"]) + int(s["excess_charge"]) for s in slots)
    credits = sum(int(s["surplus_credit"]) for s in slots)
    from_grid = sum(max(0, int(s["import_energy"]) - int(s["bought"])) for s in slots)
    to_grid = sum(max(0, int(s["export_energy"]) - int(s["sold"])) for s in slots)
    current = rates_at(history, max([int(t["time_slot"]) for t in trades]
                                    + [int(s["slot"]) for s in slots] + [0]))
    return {
        "participant": participant, "period": period, "trades": len(trades),
        "bought": bought, "paid": paid, "sold": sold, "received": received,
        "from_grid": from_grid, "to_grid": to_grid,
        "self_sufficiency": self_sufficiency(bought, from_grid),
        "grid_value": grid_value // SCALE, "feed_in_value": feed_in_value // SCALE,
        "savings": grid_value // SCALE - paid, "earned": received - feed_in_value // SCALE,
        "balancing_charges": charges, "balancing_credits": credits,
        "net": received + credits - paid - charges,
        "metered_slots": len(slots),
        "unmetered_slots": len(queries.unmetered_slots(db, participant, period=period,
                                                       open_period=open_period)),
        "meters": queries.meters_of(db, participant),
        "grid_supply_rate": current.grid_supply, "feed_in_rate": current.feed_in,
        "shortfall_rate": current.shortfall,
        "balancing": balancing_lines(slots, history),
    }
