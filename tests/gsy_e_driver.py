"""One gsy-e simulation in this process, as ``gsy-e run ARGS`` runs it, with PilotChain's
plug-in from this checkout and a record of every trade gsy-e appends to a market's books.

    GSY_E_PYTHON tests/gsy_e_driver.py OUT.json [gsy-e run arguments ...]

Run it with the interpreter of an environment where gsy-e is installed (gsy-e is not on the
package registries; tests that need it skip where it is not). The plug-in and its ``gsy_dex``
shim are imported from ``plugin/`` of this checkout, ahead of any installed copy, so what runs
is the code under test. REDIS_URL and BRIDGE_STREAM (the plug-in's settings) come from the
environment as in any gsy-e run.

OUT.json: ``{"trades": [{"market_id", "trade_id", "market_kind", "offer"}...], "seconds"}``,
one entry per call of gsy-e's ``MarketBase._update_stats_after_trade``, the one place a trade
enters a market's ``trades`` list (what gsy-e exports); ``market_id`` is the id the market's
ledger interface was built with (the area's uuid), as in the plug-in's events, and ``offer``
whether the trade has one (a bid's chain leg has none). Only the standard library and gsy-e
here: this file is not part of PilotChain's environment.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugin"))


def main(argv: list[str]) -> int:
    out, args = Path(argv[0]), argv[1:]
    from gsy_e.gsy_e_core.cli import main as gsy_e
    from gsy_e.models.market import MarketBase

    booked: list[dict[str, Any]] = []
    original = MarketBase._update_stats_after_trade

    def booking(market: Any, trade: Any, order: Any) -> Any:
        booked.append({"market_id": str(getattr(market.bc_interface, "market_id", None)),
                       "trade_id": str(trade.id), "market_kind": type(market).__name__,
                       "offer": trade.match_details.get("offer") is not None})
        return original(market, trade, order)

    MarketBase._update_stats_after_trade = booking  # type: ignore[method-assign]
    began = time.monotonic()
    try:
        gsy_e.main(args=["run", *args], standalone_mode=False)
    finally:
        import pilotchain_gsy_plugin

        # Deliver what the publisher holds before reporting: the test reads the stream next.
        pilotchain_gsy_plugin.shared_publisher().close()
        out.write_text(json.dumps({"trades": booked, "seconds": time.monotonic() - began}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
