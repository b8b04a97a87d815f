"""The follow loop: the Settlement contract's confirmed events into the portal's database.

Each round reads the head, and if a block is confirmed (``PORTAL_CONFIRMATIONS`` blocks on
top of it) beyond the cursor, one page of up to ``PORTAL_PAGE_BLOCKS`` blocks: the
contract's logs (``eth_getLogs``) and the blocks' headers, in one JSON-RPC batch. The page is
used only if it is one piece of chain: every header's parent is the block before it, every
log's block hash is its header's; otherwise the chain moved between the two reads and the
page is read again. Its rows, the newest block hashes and the cursor are then committed in
one transaction, so a crash anywhere resumes at the cursor with nothing half-indexed.

A page whose answer the node refuses as too large (geth sends at most 25 MB per batch,
``--rpc.batch-response-max-size``: about 20,000 trades) is read again as half as many
blocks, down to one; the smaller span stays until the indexer has caught up.

A reorganisation shows up as a page whose first parent is not the cursor's block, or as a
cursor block the chain no longer has. The newest block whose stored hash the chain still
has is the common ancestor: every row above it is deleted with the cursor moved back to it
(one transaction), and indexing goes on from there. Hashes are kept for
``PORTAL_MAX_REORG_DEPTH`` blocks; a reorganisation deeper than that stops the indexer with
:class:`ReorgTooDeep`.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from web3 import Web3

from pilotchain.chain import ChainUnreachable, NodeRefused, batch_call, connect, read
from pilotchain.contract import ContractError, Deployment, load_deployment
from portal.config import PortalSettings
from portal.db import Block, Cursor, Database, DatabaseUnavailable
from portal.errors import BlockTooLarge, ChainMoved, PortalConfigError, ReorgTooDeep
from portal.events import TOPICS, Row, decode

log = logging.getLogger(__name__)

# geth's refusal of a batch whose answer exceeds --rpc.batch-response-max-size.
TOO_LARGE = "response too large"
# New rows after which the database's statistics are refreshed once the indexer has caught up.
REFRESH_AFTER_ROWS = 10_000


@dataclass(frozen=True)
class Page:
    """Consecutive blocks (ascending) and the contract's logs in them."""

    blocks: list[Block]
    logs: list[Mapping[str, Any]]


class Indexer:
    """Follows one deployment into one database; ``run`` until ``stop`` is set."""

    def __init__(self, settings: PortalSettings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.url = settings.rpc_url
        self.w3: Web3 = connect(self.url, timeout=settings.rpc_timeout_seconds,
                                env_proxies=False)
        self.deployment = self._deployment()
        self.db: Database | None = None
        self.cursor: Cursor | None = None
        # Blocks per page: PORTAL_PAGE_BLOCKS, fewer while pages of busy blocks are too large.
        self.span = settings.page_blocks
        self.rows_since_refresh = 0

    def _deployment(self) -> Deployment:
        record = self.settings.chain.deployment_file
        try:
            return load_deployment(record)
        except ContractError as error:
            raise PortalConfigError(f"{error} The indexer follows the contract it records "
                                    "(DEPLOYMENT_FILE).") from None

    # -- start ----------------------------------------------------------------------------

    def open(self) -> Cursor:
        """Connect to the database, create or migrate its schema, and find the cursor."""
        chain_id = read(self.url, "Reading the chain id", lambda: self.w3.eth.chain_id)
        if chain_id != self.deployment.chain_id:
            raise PortalConfigError(
                f"The node at {self.url} serves chain {chain_id}, but the deployment record "
                f"{self.settings.chain.deployment_file} is for chain "
                f"{self.deployment.chain_id}: check RPC_URL and DEPLOYMENT_FILE.")
        if self.db is not None:
            self.db.close()
        self.db = Database(self.settings.database_url)
        self.db.migrate()
        before = self._headers([self.deployment.block_number - 1])[0]
        if before is None:
            raise PortalConfigError(f"The node at {self.url} has no block "
                                    f"{self.deployment.block_number - 1}.")
        self.cursor = self.db.start(chain_id, self.deployment.address, before)
        log.info("Indexing %s on chain %d into %s from block %d.", self.deployment.address,
                 chain_id, self.db.shown, self.cursor.block_number + 1)
        return self.cursor

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    # -- rounds ---------------------------------------------------------------------------

    def run(self) -> None:
        """Index until ``stop`` is set; waits out an unreachable node or database."""
        backoff = self.settings.poll_interval
        while not self.stop.is_set():
            try:
                if self.db is None:
                    self.open()
                busy = self.sync_once()
                backoff = self.settings.poll_interval
            except (ChainUnreachable, ChainMoved) as error:
                log.warning("%s Trying again in %.1f s.", error, backoff)
                busy = False
            except DatabaseUnavailable as error:
                log.warning("%s Reconnecting in %.1f s.", error, backoff)
                self.close()
                busy = False
            if not busy:
                self.stop.wait(backoff)
                backoff = min(backoff * 2, max(self.settings.backoff_max,
                                                self.settings.poll_interval))
        self.close()

    def catch_up(self) -> Cursor:
        """Run rounds until nothing confirmed is left; return the cursor."""
        if self.db is None:
            self.open()
        while self.sync_once():
            pass
        assert self.cursor is not None
        return self.cursor

    def sync_once(self) -> bool:
        """One round: index a page, or undo a reorganisation; False if there was nothing."""
        assert self.db is not None and self.cursor is not None, "open() first"
        cursor = self.cursor
        head = read(self.url, "Reading the head", lambda: self.w3.eth.block_number)
        target = head - self.settings.confirmations
        if target <= cursor.block_number:
            self.span = self.settings.page_blocks
            # Caught up: a reorganisation to a shorter (heavier) chain shows only here.
            current = self._headers([cursor.block_number])[0]
            if current is None or current.hash != cursor.block_hash:
                self._rewind()
                return True
            if self.rows_since_refresh >= REFRESH_AFTER_ROWS:
                started = time.monotonic()
                self.db.refresh_statistics()
                log.info("Caught up after %d new events; statistics refreshed in %.1f s.",
                         self.rows_since_refresh, time.monotonic() - started)
                self.rows_since_refresh = 0
            return False
        end = min(cursor.block_number + self.span, target)
        try:
            page = self._page(cursor.block_number + 1, end)
        except NodeRefused as error:
            if TOO_LARGE not in error.reason:
                raise
            self._smaller_pages(cursor.block_number + 1, end)
            return True
        if page.blocks[0].parent_hash != cursor.block_hash:
            self._rewind()
            return True
        rows = decode_page(page.logs)
        keep = self.settings.max_reorg_depth + 1
        self.cursor = self.db.commit_page(cursor, rows, page.blocks[-keep:], keep)
        self.rows_since_refresh += len(rows)
        level = logging.INFO if rows else logging.DEBUG
        log.log(level, "Indexed blocks %d-%d: %d events (head %d).", page.blocks[0].number,
                end, len(rows), head)
        return True

    def _smaller_pages(self, start: int, end: int) -> None:
        """The node refused blocks ``start``..``end`` as one answer: halve the span."""
        if start == end:
            raise BlockTooLarge(
                f"Block {start} alone holds more events than the node at {self.url} sends in "
                "one answer; raise its limit (geth: --rpc.batch-response-max-size).")
        self.span = max(1, (end - start + 1) // 2)
        log.info("The node refused blocks %d-%d as one answer too large; reading %d blocks a "
                 "page until caught up.", start, end, self.span)

    # -- chain reads ----------------------------------------------------------------------

    def _page(self, start: int, end: int) -> Page:
        """Headers and logs of blocks ``start``..``end``, checked to be one piece of chain."""
        address = self.deployment.address
        query = {"address": address, "fromBlock": hex(start), "toBlock": hex(end),
                 "topics": [["0x" + topic.hex() for topic in TOPICS]]}
        requests_: list[tuple[str, Sequence[Any]]] = [
            ("eth_getLogs", [query]),
                     *(("eth_getBlockByNumber", [hex(n), False]) for n in range(start, end + 1))]
        logs, *headers = batch_call(self.w3, self.url, f"Reading blocks {start}-{end}",
                                    requests_)
        blocks = [_block(header) for header in headers]
        moved = ChainMoved(f"The chain changed while blocks {start}-{end} were read.")
        if any(block is None for block in blocks):
            raise moved
        chain = [block for block in blocks if block is not None]
        for parent, child in itertools.pairwise(chain):
            if child.parent_hash != parent.hash:
                raise moved
        hashes = {block.number: block.hash for block in chain}
        for entry in logs:
            if hashes.get(_int(entry["blockNumber"])) != str(entry["blockHash"]).lower():
                raise moved
        return Page(chain, logs)

    def _headers(self, numbers: Sequence[int]) -> list[Block | None]:
        answers = batch_call(self.w3, self.url, "Reading block headers",
                             [("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        return [_block(answer) for answer in answers]

    def _rewind(self) -> None:
        """Move back to the newest stored block the chain still has, deleting what is above."""
        assert self.db is not None and self.cursor is not None
        stored = self.db.recent_blocks()
        on_chain = self._headers([block.number for block in stored])
        for block, current in zip(stored, on_chain, strict=True):
            if current is not None and current.hash == block.hash:
                ancestor = block
                break
        else:
            oldest = stored[-1].number if stored else self.cursor.block_number
            raise ReorgTooDeep(
                f"The chain no longer has any indexed block from {oldest} to "
                f"{self.cursor.block_number}: a reorganisation deeper than "
                f"PORTAL_MAX_REORG_DEPTH={self.settings.max_reorg_depth} blocks. Re-index into "
                "a fresh database (another PORTAL_DATABASE_URL), or raise the setting.")
        log.warning("The chain replaced blocks %d-%d: removing their events and indexing "
                    "again from block %d.", ancestor.number + 1, self.cursor.block_number,
                    ancestor.number + 1)
        self.cursor = self.db.rewind(self.cursor, ancestor)


def _block(header: Mapping[str, Any] | None) -> Block | None:
    if not header:
        return None
    return Block(_int(header["number"]), str(header["hash"]).lower(),
                 str(header["parentHash"]).lower())


def _int(value: str | int) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def decode_page(logs: Sequence[Mapping[str, Any]]) -> list[Row]:
    """The rows of a page's logs (events the portal does not keep are left out)."""
    return [row for row in (decode(entry) for entry in logs) if row is not None]
