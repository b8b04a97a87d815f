"""Reorganisations under the portal's indexer, on the chain's real blocks.

A real one could not be produced reliably here (a network split by stopping validators
left a restarted one sealing a stale fork of its own), so the index is made to hold blocks
the chain does not have, at the one place a reorganisation shows: the stored hashes. The
indexer must go back to the common ancestor, drop what is above it and index again; and
stop with a clear error when no kept hash matches (deeper than PORTAL_MAX_REORG_DEPTH).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from bridge_fixtures import Deployed, synthesise
from portal_fixtures import chain_trade_rows, portal_settings, record_trades

from pilotchain.trades import TradeRecord, parse_event
from portal.db import Database
from portal.errors import ReorgTooDeep
from portal.indexer import Indexer


def trades(seed: int, count: int = 20) -> list[TradeRecord]:
    return [parse_event(json.loads(line)) for line in synthesise(count, seed=seed)]




def foreign(db: Database, above: int) -> None:
    """Make the stored hashes of the blocks above ``above`` (and the cursor's) ones the chain
    does not have: the index now holds blocks that a reorganisation replaced."""
    with db._transaction() as cur:  # the test's own write, standing in for the orphaned blocks
        cur.execute(db._sql("UPDATE blocks SET hash = '0x' || substr(hash, 4) || 'ff' "
                            "WHERE number > ?"), (above,))
        cur.execute("UPDATE cursor SET block_hash = '0x' || substr(block_hash, 4) || 'ff'")


def test_rows_of_replaced_blocks_are_removed_and_indexed_again(
        deployed: Deployed, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The chain's real blocks, with the newest indexed ones' hashes made foreign (where a
    reorganisation shows): the indexer goes back to the newest block the chain still has,
    deletes what is above it and indexes those blocks again, each trade once."""
    url = f"sqlite:///{tmp_path / 'portal.sqlite3'}"
    settings = portal_settings(deployed, url, confirmations=0, page_blocks=1)
    indexer = Indexer(settings)
    indexer.open()
    receipts = record_trades(deployed, trades(seed=6, count=60), batch=20)
    cursor = indexer.catch_up()
    replaced_from = min(receipt["blockNumber"] for receipt in receipts)
    assert cursor.block_number >= replaced_from
    indexer.close()
    db = Database(url)
    try:
        before = db.rows("trades")
        foreign(db, replaced_from - 1)
        deployed.net.wait_for_block(cursor.block_number + 1)
        with caplog.at_level(logging.WARNING, logger="portal.indexer"):
            indexer.catch_up()
        indexer.close()
        assert f"The chain replaced blocks {replaced_from}-{cursor.block_number}" in caplog.text
        after = db.rows("trades")
    finally:
        db.close()
    assert len(before) == 60
    assert after == chain_trade_rows(deployed)
    assert after[:len(before)] == before


def test_a_reorganisation_deeper_than_the_kept_hashes_stops_the_indexer(
        deployed: Deployed, tmp_path: Path) -> None:
    """The chain's own blocks, with every stored hash made foreign: as if the chain had
    replaced more blocks than PORTAL_MAX_REORG_DEPTH."""
    url = f"sqlite:///{tmp_path / 'portal.sqlite3'}"
    settings = portal_settings(deployed, url, confirmations=0, max_reorg_depth=4)
    indexer = Indexer(settings)
    indexer.open()
    record_trades(deployed, trades(seed=4))
    deployed.net.wait_for_block(deployed.deployment.block_number + settings.max_reorg_depth + 2)
    cursor = indexer.catch_up()
    db = Database(url)
    try:
        assert len(db.recent_blocks()) == settings.max_reorg_depth + 1
        with db._transaction() as cur:  # a test's own write: the foreign hashes
            cur.execute("UPDATE blocks SET hash = '0x' || substr(hash, 4) || 'ff'")
            cur.execute("UPDATE cursor SET block_hash = '0x' || substr(block_hash, 4) || 'ff'")
    finally:
        db.close()
    indexer.close()
    deployed.net.wait_for_block(cursor.block_number + 1)
    with pytest.raises(ReorgTooDeep, match="PORTAL_MAX_REORG_DEPTH=4"):
        indexer.catch_up()
    indexer.close()
