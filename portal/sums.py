"""Each participant's running bill per billing period, as the indexer keeps it (table
``participant_sums``, schema version 7): what the contract's bill words would have changed by
in that period, so the open period's bill of every participant is one row each.

The contract counts a trade's price as receivable for the seller and payable for the buyer
(``billOf``), and books a balanced slot's shortfall and excess charges and surplus credit on
the participant's balancing, the other side on the grid operator's (``balancingOf``,
participant ``OPERATOR``). A period's statement is the change of those words between two
``closePeriod`` calls in recording order; so an event's period is the number of periods
closed before it (by block and log index), plus one.

Rows hold the sums as they stand after a block, one per block that changed them: a
reorganisation deletes the rows of its blocks (as it does every event row) and the newest
row left is the sum again. The newest row of each participant and period is also kept as
its bill (table ``participant_bills``), which is what the pages read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pilotchain.metering import OPERATOR
from portal.events import id_text
from portal.schema import PARTICIPANT_SUMS

OPERATOR_ID = id_text(OPERATOR)
SOLD, BOUGHT, RECEIVABLE, PAYABLE, CHARGES, CREDITS = range(len(PARTICIPANT_SUMS))

# (period, participant) -> the six sums
Key = tuple[int, str]


def changes(table: str, values: Mapping[str, Any]) -> list[tuple[str, dict[int, int]]]:
    """What one event adds to whose sums (none for events that leave bills alone)."""
    if table == "trades":
        energy, price = int(values["energy"]), int(values["price"])
        return [(str(values["seller"]), {SOLD: energy, RECEIVABLE: price}),
                (str(values["buyer"]), {BOUGHT: energy, PAYABLE: price})]
    if table == "slots_balanced":
        charges = int(values["shortfall_charge"]) + int(values["excess_charge"])
        credits = int(values["surplus_credit"])
        if charges == 0 and credits == 0:
            return []  # the contract books nothing either
        return [(str(values["participant"]), {CHARGES: charges, CREDITS: credits}),
                (OPERATOR_ID, {CHARGES: credits, CREDITS: charges})]
    return []


def block_sums(events: Iterable[tuple[str, int, Mapping[str, Any]]], closed: int,
               before: Mapping[Key, list[int]]) -> dict[tuple[int, str, int], list[int]]:
    """The rows for ``events`` (table, block number, values; in recording order): for each
    (period, participant, block) that changed, the sums after that block. ``closed`` is the
    number of periods closed before the first event; ``before`` the sums the open period
    had then (an absent participant: nothing yet)."""
    period = closed + 1
    current: dict[Key, list[int]] = {}
    found: dict[tuple[int, str, int], list[int]] = {}
    for table, block, values in events:
        if table == "periods":
            period = int(values["period"]) + 1
            continue
        for participant, added in changes(table, values):
            key = (period, participant)
            sums = current.get(key)
            if sums is None:
                sums = current[key] = list(before.get(key, [0] * len(PARTICIPANT_SUMS)))
            for index, amount in added.items():
                sums[index] += amount
            found[(period, participant, block)] = list(sums)
    return found


def newest(found: Mapping[tuple[int, str, int], list[int]]) -> dict[Key, list[int]]:
    """Of rows made by :func:`block_sums`, each (period, participant)'s newest: its bill."""
    bills: dict[Key, tuple[int, list[int]]] = {}
    for (period, participant, block), values in found.items():
        if (period, participant) not in bills or bills[(period, participant)][0] < block:
            bills[(period, participant)] = (block, values)
    return {key: values for key, (_, values) in bills.items()}


def net(sums: Mapping[str, int]) -> int:
    """The statement's own formula: receivable + credits - payable - charges (positive: the
    participant is owed)."""
    return (sums["money_receivable"] + sums["balancing_credits"] - sums["money_payable"]
            - sums["balancing_charges"])
