"""``pilotchain-portal-indexer``: follow the Settlement contract's events into the portal's
database.

The only place that reads the environment; errors a user can act on arrive as
PilotChainError and are printed as one sentence, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from pilotchain.config import masked_url
from pilotchain.errors import PilotChainError
from pilotchain.settings import load_environment
from portal.config import PortalSettings
from portal.db import started_cursor
from portal.indexer import Indexer

PROG = "pilotchain-portal-indexer"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.splitlines()[0],
        epilog="Settings come from the environment and .env; see docs/settings.md.")
    parser.add_argument("--once", action="store_true",
                        help="index up to the confirmed head, then exit")
    parser.add_argument("--check", action="store_true",
                        help="exit 0 if the index has started (a health check), else 1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = PortalSettings.from_env(load_environment())
        return check(settings) if args.check else run(settings, once=args.once)
    except PilotChainError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def check(settings: PortalSettings) -> int:
    """0 once an indexer has recorded its cursor in the database (Compose's health check);
    1 with a sentence while the database is unreachable or not started."""
    cursor = started_cursor(settings.database_url)
    if cursor is None:
        print(f"{PROG}: no indexer has started the index {masked_url(settings.database_url)} "
              "yet.", file=sys.stderr)
        return 1
    print(f"{PROG}: the index holds {cursor.contract} up to block "
          f"{cursor.block_number}.")
    return 0


def run(settings: PortalSettings, *, once: bool = False) -> int:
    """Index until SIGTERM or SIGINT (or, with ``once``, until caught up)."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        del frame
        logging.getLogger("portal").info("Stopping on signal %d.", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    indexer = Indexer(settings, stop)
    try:
        if once:
            indexer.catch_up()
        else:
            indexer.run()
    finally:
        indexer.close()
    return 0
