"""The trade events the tests replay, recorded from real gsy-e runs (see data/README.md)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
RECORDINGS = sorted(DATA.glob("*.jsonl"))
SETTLEMENT_RECORDING = DATA / "settlement_default_2a_two_sided.jsonl"
SLOT_LENGTH = timedelta(minutes=15)

# Wide enough for any amount the contract takes (below 2**96) at 18 decimals.
_WIDE = Context(prec=100)
_SCALE = Decimal("1e-18")


def on_scale(amount: float | Decimal) -> Decimal:
    """A recorded amount as the contract's 18-decimal scale holds it: rounded half-to-even to
    18 decimals, i.e. the amount itself whenever it has at most 18. Computed with ``decimal``
    alone, independently of ``pilotchain.trades``."""
    exact = Decimal(repr(amount)) if isinstance(amount, float) else amount
    return exact.quantize(_SCALE, ROUND_HALF_EVEN, _WIDE)


def kept_on_chain(amount: float) -> float:
    """The float a recorded amount decodes back to from the chain."""
    return float(on_scale(amount))


def decimals_of(amount: float) -> int:
    """Digits after the point of the float's shortest decimal form (what gsy-e's JSON holds)."""
    return max(0, -int(Decimal(repr(amount)).as_tuple().exponent))


def market_kind(trade: dict[str, Any]) -> str:
    """Which gsy-e market made a trade, from its own times: a settlement market trades a slot
    only after it ended, a future market before it began, the spot market during it."""
    slot = datetime.fromisoformat(trade["time_slot"])
    created = datetime.fromisoformat(trade["creation_time"])
    if created >= slot + SLOT_LENGTH:
        return "settlement"
    return "future" if created < slot else "spot"
