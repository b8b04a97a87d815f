"""Reorganisations under the portal's indexer.

A real one first: a private three-signer network split in two (one signer with the RPC node
the indexer follows, against the two other signers), each side recording trades the other
never sees, then healed; the RPC node drops its side's block for the heavier chain, and the
index must end with exactly the surviving chain's trades. Then the paths a real split does
not reach on demand, with the index made to hold blocks the chain does not have at the one
place a reorganisation shows, the stored hashes: the indexer goes back to the common
ancestor, drops what is above it and indexes again; and stops with a clear error when no kept
hash matches (deeper than PORTAL_MAX_REORG_DEPTH).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from bridge_fixtures import Deployed, deploy, synthesise
from hexbytes import HexBytes
from portal_fixtures import (
    BILL_FIELDS,
    chain_trade_rows,
    open_period_bill_on_chain,
    portal_settings,
    record_trades,
)
from split import HEAL_BLOCKS, HEAL_WHY, Nodes, wait
from web3 import Web3

from pilotchain.chain import Sender, connect
from pilotchain.settlement import SettlementABI
from pilotchain.trades import TradeRecord, parse_event, uuid_to_bytes32
from portal import queries
from portal.db import Database
from portal.errors import ReorgTooDeep
from portal.indexer import Indexer
from runner.localnet import RPC_NODE, LocalNetwork


def trades(seed: int, count: int = 20) -> list[TradeRecord]:
    return [parse_event(json.loads(line)) for line in synthesise(count, seed=seed)]


def assert_bills_are_the_contracts(target: Deployed, bills: dict[str, dict[str, int]],
                                   records: list[TradeRecord], block: int) -> None:
    """Every trader of ``records`` has, in the index, the open-period bill the contract
    gives at ``block`` (none at all for one whose trades the chain no longer has)."""
    nothing = dict.fromkeys(BILL_FIELDS, 0)
    for who in sorted({party for r in records for party in (r.seller, r.buyer)}):
        assert bills.get(str(who), nothing) == open_period_bill_on_chain(
            target.net.rpc_url, target.deployment, uuid_to_bytes32(who), block), who


# --- a real split of a real network ---------------------------------------------------------


def send_trades(w3: Web3, target: Deployed, records: list[TradeRecord]) -> HexBytes:
    """One recordTrades from the bridge's key, its nonce read from ``w3``'s node."""
    sender = Sender(w3, target.net.keys.role("bridge").unlock())
    data = SettlementABI(target.deployment.load_abi()).record_trades(records)
    return sender.send({"to": target.deployment.address, "data": data})


def test_a_real_split_of_the_network_reorganises_the_indexed_chain(
        make_network: Callable[..., LocalNetwork], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Signer A with the RPC node (side A) against signers B1 and B2 (side B). A seals one
    block holding trades X; B, never having seen it, seals a longer, heavier chain holding
    trades Y from the same key and nonce (so X can never come back). Healed, the RPC node
    reorganises onto B's chain, and the indexer, which had indexed X with no confirmations,
    ends with exactly the surviving chain's trades: Y once, nothing of X."""
    net = make_network()
    nodes = Nodes(net)
    w3 = connect(net.rpc_url)
    target = deploy(net, tmp_path)
    url = f"sqlite:///{tmp_path / 'portal.sqlite3'}"
    indexer = Indexer(portal_settings(target, url, confirmations=0))
    indexer.open()
    db = indexer.db
    assert db is not None
    record_trades(target, trades(seed=11, count=10))
    a, *b = [role.name for role in net.keys.validators()]
    side_a = [a, RPC_NODE]
    enodes = {name: nodes.call(name, "admin_nodeInfo")["enode"] for name in b}
    b_ids = {nodes.call(name, "admin_nodeInfo")["id"] for name in b}
    x, y = trades(seed=12), trades(seed=13)
    signer_a = net.keys.role(a).address.lower()
    try:
        with nodes.freezing():
            # A stops sealing until the two newest blocks are B's: then A may seal the next
            # one alone (a signer of three may not seal two blocks in a row), and nothing A
            # sealed before is still on its way.
            nodes.call(a, "miner_stop")
            stopped = net.block_number()
            net.wait_for_blocks(
                lambda: (head := net.block_number()) > stopped + 2 and all(
                    nodes.signer(RPC_NODE, n) != signer_a for n in (head, head - 1)),
                blocks=10, what="two blocks sealed by B1 and B2",
                why="B1 and B2 take turns; A's last block is two behind within a few")
            nodes.freeze(b)
            for name in side_a:
                for enode in enodes.values():
                    nodes.call(name, "admin_removePeer", enode)
            wait(lambda: not (nodes.peers(a) | nodes.peers(RPC_NODE)) & b_ids,
                 "side A to drop its peers on side B")
            fork = net.block_number()
            x_hash = send_trades(w3, target, x)
            x_tx = wait(lambda: nodes.call(a, "eth_getTransactionByHash", x_hash.to_0x_hex()),
                        "trades X to reach signer A's pool")
            nodes.call(a, "miner_start")
            # A alone seals exactly one block, with X in it (X is in its pool), then halts.
            x_block = net.wait_for_blocks(
                lambda: (r := nodes.receipt(RPC_NODE, x_hash)) and r["blockHash"],
                blocks=1, what="side A to seal trades X",
                why="X waits in signer A's pool, so A's one block holds it")
            nodes.call(a, "miner_stop")
            weight_a = nodes.total_difficulty(RPC_NODE)
            indexer.catch_up()
            assert {str(t.trade_id) for t in x} <= {row["trade_id"] for row in db.rows("trades")}
            x_bills = queries.open_period_bills(db)
            assert all(str(t.seller) in x_bills for t in x)  # X's sums, to be taken away
            # Side A frozen before side B wakes: otherwise, in between, B redials A at once (a
            # static peer), learns X and A's head, and starts a sync from a peer that is then
            # frozen, which stops a fresh signer's sealing ("Mining aborted due to sync").
            nodes.freeze(side_a)
            nodes.thaw(b)
            b_w3 = nodes.w3(b[0])
            y_hash = send_trades(b_w3, target, y)
            net.wait_for_blocks(lambda: nodes.receipt(b[0], y_hash), name=b[0], blocks=5,
                                what="side B to record trades Y",
                                why="Y waits in B1's pool, so one of B's next blocks holds it")
            # Side B never saw X: Y takes X's nonce, so X is invalid on B's chain for good.
            assert nodes.call(b[0], "eth_getTransactionByHash", y_hash.to_0x_hex())["nonce"] \
                == x_tx["nonce"]
            # Each block adds 1 or 2 to the weight and A's one block past the split at most 2,
            # so three blocks of B's past the split outweigh it whatever the turns.
            net.wait_for_blocks(lambda: nodes.total_difficulty(b[0]) > weight_a, name=b[0],
                                blocks=3, what="side B to outweigh side A",
                                why="each of B's blocks adds at least 1, A's one block at most 2")
            nodes.thaw(side_a)
        for name in side_a:
            for enode in enodes.values():
                nodes.call(name, "admin_addPeer", enode)
        y_receipt = net.wait_for_blocks(lambda: nodes.receipt(RPC_NODE, y_hash), name=b[0],
                                        blocks=HEAL_BLOCKS, what="the RPC node to take side B's "
                                        "chain", why=HEAL_WHY)
    finally:
        nodes.call(a, "miner_start")
    assert w3.eth.get_block(int(y_receipt["blockNumber"], 16))["hash"].to_0x_hex() == \
        y_receipt["blockHash"]
    assert w3.eth.get_block(fork + 1)["hash"].to_0x_hex() != x_block
    with caplog.at_level(logging.WARNING, logger="portal.indexer"):
        indexer.catch_up()
    assert "The chain replaced blocks" in caplog.text
    after = db.rows("trades")
    totals = queries.totals(db)
    bills = queries.open_period_bills(db)
    block = db.cursor().block_number  # type: ignore[union-attr]
    indexer.close()
    assert after == chain_trade_rows(target)
    # Each participant's open-period bill, X's traders' too, is the surviving chain's.
    assert_bills_are_the_contracts(target, bills, [*x, *y], block)
    assert totals == {"trades": len(after), "energy": sum(row["energy"] for row in after),
                      "price": sum(row["price"] for row in after)}
    ids = [row["trade_id"] for row in after]
    assert len(ids) == len(set(ids)) == 10 + len(y)
    assert {str(t.trade_id) for t in y} <= set(ids)
    assert not {str(t.trade_id) for t in x} & set(ids)


# --- reorganisations staged in the stored hashes ----------------------------------------------



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
        bills = queries.open_period_bills(db)
        block = db.cursor().block_number  # type: ignore[union-attr]
    finally:
        db.close()
    assert len(before) == 60
    assert after == chain_trade_rows(deployed)
    assert after[:len(before)] == before
    assert_bills_are_the_contracts(deployed, bills, trades(seed=6, count=60), block)


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
