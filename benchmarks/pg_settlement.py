"""The reference consumer for the database question: the bridge's stream into PostgreSQL with
the bridge's guarantees, and nothing else.

    .venv/bin/python benchmarks/pg_settlement.py --redis-url URL --postgres-url URL \\
        [--stream pilotchain:trades] [--group pg-settlement] [--batch 500] [--timings FILE]

It reads the stream the plug-in writes (one ``event`` field per entry) through a consumer
group, validates each entry exactly as the bridge does (``bridge.events.decode_entry``:
malformed entries go to the dead-letter stream with the reason), and settles each batch in
one PostgreSQL transaction:

* **Exactly once by trade id**: the trade's row is inserted with ``ON CONFLICT (trade_id) DO
  NOTHING``; only rows actually inserted update bills, so a redelivered or duplicated trade
  changes nothing.
* **Bills in the same transaction**: each participant's bill (energy sold and bought, money
  receivable and payable, scaled like the contract's, computed as
  ``pilotchain.trades.compute_bills`` does: the buyer owes the seller the price, the fee is
  not billed) is added to in the statement that inserts the trades.
* **Acknowledged only after commit** (``synchronous_commit`` on: the commit is on disk). A
  consumer killed at any moment leaves its entries pending; at start it takes over every
  pending entry of the group and settles it again, which the primary key makes harmless.

It is a reference for measuring, kept deliberately small: one consumer per group, no
metrics endpoint. ``--timings`` appends one JSON line per committed batch (commit time and
the entries' stream times), from which the benchmark computes latency.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

import psycopg
import redis

from bridge.events import ValidTrade, decode_entry
from pilotchain.trades import TradeRecord
from worker.entries import Entry, Rejected, entry_time_ms
from worker.stream import TRANSIENT, StreamConsumer, connect_redis

log = logging.getLogger("pg_settlement")

SCHEMA = """
CREATE TABLE IF NOT EXISTS trades (
    trade_id      uuid PRIMARY KEY,
    market        uuid NOT NULL,
    time_slot     bigint NOT NULL,
    seller        uuid NOT NULL,
    buyer         uuid NOT NULL,
    seller_origin uuid NOT NULL,
    buyer_origin  uuid NOT NULL,
    energy        numeric(30, 0) NOT NULL,
    price         numeric(30, 0) NOT NULL,
    fee           numeric(30, 0) NOT NULL
);
CREATE TABLE IF NOT EXISTS bills (
    participant      uuid PRIMARY KEY,
    energy_sold      numeric(40, 0) NOT NULL,
    energy_bought    numeric(40, 0) NOT NULL,
    money_receivable numeric(40, 0) NOT NULL,
    money_payable    numeric(40, 0) NOT NULL
);
"""

# Trades inserted unless their id is there already; only the inserted ones reach the bills.
SETTLE = """
WITH incoming AS (
    SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::bigint[], %s::uuid[], %s::uuid[],
                         %s::uuid[], %s::uuid[], %s::numeric[], %s::numeric[], %s::numeric[])
        AS t(trade_id, market, time_slot, seller, buyer, seller_origin, buyer_origin,
             energy, price, fee)
), inserted AS (
    INSERT INTO trades SELECT * FROM incoming
    ON CONFLICT (trade_id) DO NOTHING
    RETURNING seller, buyer, energy, price
), moves AS (
    SELECT seller AS participant, energy AS sold, 0::numeric AS bought,
           price AS receivable, 0::numeric AS payable FROM inserted
    UNION ALL
    SELECT buyer, 0, energy, 0, price FROM inserted
)
INSERT INTO bills (participant, energy_sold, energy_bought, money_receivable, money_payable)
SELECT participant, sum(sold), sum(bought), sum(receivable), sum(payable)
FROM moves GROUP BY participant
ON CONFLICT (participant) DO UPDATE SET
    energy_sold = bills.energy_sold + excluded.energy_sold,
    energy_bought = bills.energy_bought + excluded.energy_bought,
    money_receivable = bills.money_receivable + excluded.money_receivable,
    money_payable = bills.money_payable + excluded.money_payable
"""

BACKOFF_MAX = 5.0


class PgSettlementError(Exception):
    """The reference consumer cannot go on; the message says why."""


class Consumer:
    """One consumer of the group, settling batches into one PostgreSQL database."""

    def __init__(self, stream: StreamConsumer, postgres_url: str,
                 timings: IO[str] | None = None) -> None:
        self.stream = stream
        self.postgres_url = postgres_url
        self.timings = timings
        self.conn: psycopg.Connection[tuple[object, ...]] | None = None
        self.stopping = False
        self.settled = 0

    def connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(self.postgres_url, connect_timeout=5)
            with self.conn.transaction():
                self.conn.execute(SCHEMA)
        return self.conn

    def settle(self, entries: Sequence[Entry]) -> None:
        """Commit the valid entries' trades and bills, then acknowledge every entry;
        dead-letter the malformed ones (their own acknowledgement)."""
        decoded = [decode_entry(entry_id, fields) for entry_id, fields in entries]
        rejected = [d for d in decoded if isinstance(d, Rejected)]
        valid = [d for d in decoded if isinstance(d, ValidTrade)]
        for item in rejected:
            log.warning("Dead-lettering entry %s: %s", item.entry_id, item.reason)
        if rejected:
            self.stream.dead_letter(rejected)
        if not valid:
            return
        conn = self.connection()
        with conn.transaction():
            conn.execute(SETTLE, _columns(_first_of_each(v.record for v in valid)))
        committed = time.time()
        self.stream.ack([v.entry_id for v in valid])
        self.settled += len(valid)
        if self.timings is not None:
            self.timings.write(json.dumps({"committed": committed, "entered_ms": [
                entry_time_ms(v.entry_id) for v in valid]}) + "\n")
            self.timings.flush()

    def run(self, batch: int) -> None:
        """Settle what a predecessor left pending, then new entries, until stopped."""
        delay = 0.2
        recovered = False
        while not self.stopping:
            try:
                self.connection()  # the tables exist before the first entry is read
                self.stream.ensure_group()
                if not recovered:
                    for page in self.stream.claim_unacknowledged(batch):
                        self.settle(page)
                    recovered = True
                    log.info("Recovered pending entries; reading new ones.")
                entries = self.stream.read_new(batch, block_ms=1000)
                if entries:
                    self.settle(entries)
                delay = 0.2
            except (*TRANSIENT, psycopg.OperationalError) as error:
                log.warning("Retrying in %.1f s: %s", delay, error)
                if self.conn is not None:
                    self.conn.close()
                recovered = False  # a lost reply may have left entries delivered, unseen
                time.sleep(delay)
                delay = min(BACKOFF_MAX, delay * 2)

    def stop(self, _signum: int, _frame: FrameType | None) -> None:
        self.stopping = True


def _first_of_each(records: Iterable[TradeRecord]) -> list[TradeRecord]:
    """The records with a trade id not seen earlier in the batch (one insert per id)."""
    seen: set[uuid.UUID] = set()
    unique = []
    for record in records:
        if record.trade_id not in seen:
            seen.add(record.trade_id)
            unique.append(record)
    return unique


def _columns(records: Sequence[TradeRecord]) -> list[list[object]]:
    """The SETTLE statement's ten arrays, column by column (amounts as decimal text)."""
    return [[r.trade_id for r in records], [r.market for r in records],
            [r.time_slot for r in records], [r.seller for r in records],
            [r.buyer for r in records], [r.seller_origin for r in records],
            [r.buyer_origin for r in records], [str(r.energy) for r in records],
            [str(r.price) for r in records], [str(r.fee) for r in records]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--postgres-url", required=True)
    parser.add_argument("--stream", default="pilotchain:trades")
    parser.add_argument("--group", default="pg-settlement")
    parser.add_argument("--consumer", default="pg-settlement-1")
    parser.add_argument("--batch", type=int, default=500,
                        help="entries read, and committed, at a time")
    parser.add_argument("--timings", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    client: redis.Redis = connect_redis(args.redis_url)
    stream = StreamConsumer(client, args.stream, args.group, args.consumer,
                            f"{args.stream}:dead", service="pg-settlement")
    timings = args.timings.open("a", encoding="utf-8") if args.timings else None
    consumer = Consumer(stream, args.postgres_url, timings)
    signal.signal(signal.SIGTERM, consumer.stop)
    signal.signal(signal.SIGINT, consumer.stop)
    try:
        consumer.run(args.batch)
    except psycopg.Error as error:
        raise PgSettlementError(f"PostgreSQL refused the settlement: {error}") from error
    finally:
        if timings is not None:
            timings.close()
    log.info("Stopped after settling %d entries.", consumer.settled)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PgSettlementError as failure:
        print(f"pg_settlement: {failure}", file=sys.stderr)
        sys.exit(1)
