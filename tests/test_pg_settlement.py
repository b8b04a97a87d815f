"""The database question's reference consumer (benchmarks/pg_settlement.py) on real Redis and
real PostgreSQL: every trade settled once, bills equal the Python reference, malformed
entries dead-lettered, and nothing lost or repeated when it is killed -9 mid-run."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import redis
from bridge_fixtures import START_SECONDS

from bridge.events import EVENT_FIELD
from pilotchain.chain import wait_for
from pilotchain.settings import PROJECT_ROOT
from pilotchain.trades import compute_bills, parse_event
from runner.postgres import PostgresServer

CONSUMER = PROJECT_ROOT / "benchmarks" / "pg_settlement.py"
STREAM = "test:pg-trades"
GROUP = "pg-settlement"


def recorded_events(rng: random.Random) -> list[dict[str, Any]]:
    """Every recorded gsy-e event of tests/data, each with a fresh trade id."""
    events = []
    for path in sorted((PROJECT_ROOT / "tests" / "data").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                event = json.loads(line)
                event["trade"]["id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                events.append(event)
    return events


@contextmanager
def consumer(redis_url: str, database_url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The consumer as its own process (small batches: many transactions); killed at exit."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, str(CONSUMER), "--redis-url", redis_url, "--postgres-url",
             database_url, "--stream", STREAM, "--group", GROUP, "--batch", "40"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)


def count_trades(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM trades").fetchone()
    return int(row[0]) if row else 0


def table_exists(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT to_regclass('trades') IS NOT NULL").fetchone() == (True,)


def test_each_trade_once_with_reference_bills_through_kills(
        redis_url: str, postgres_server: PostgresServer, tmp_path: Path) -> None:
    rng = random.Random(10)
    events = recorded_events(rng)
    copies = [json.loads(json.dumps(event)) for event in rng.sample(events, 60)]
    published = events + copies
    rng.shuffle(published)
    client = redis.Redis.from_url(redis_url)
    pipe = client.pipeline(transaction=False)
    for event in published:
        pipe.xadd(STREAM, {EVENT_FIELD: json.dumps(event)})
    pipe.xadd(STREAM, {EVENT_FIELD: "{not json"})
    pipe.xadd(STREAM, {EVENT_FIELD: json.dumps({**events[0], "trade": {
        **events[0]["trade"], "id": str(uuid.uuid4()), "energy": -1}})})
    pipe.execute()
    database = postgres_server.create_database(f"pg_settlement_{uuid.uuid4().hex[:8]}")
    log = tmp_path / "consumer.log"

    # Killed twice without warning, each time after a different amount of progress.
    for kill_after in (len(events) // 4, len(events) // 2):
        with consumer(redis_url, database, log) as process:
            wait_for(lambda n=kill_after: table_exists(database) and count_trades(database) >= n,
                     timeout=START_SECONDS, interval=0.01,
                     what=f"the consumer to settle {kill_after} trades before the kill")
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
        assert count_trades(database) < len(events), "killed only after it had finished"

    with consumer(redis_url, database, log) as process:
        wait_for(lambda: not client.xpending(STREAM, GROUP)["pending"]
                 and client.xinfo_groups(STREAM)[0]["entries-read"] == len(published) + 2,
                 timeout=START_SECONDS, what="every stream entry read and acknowledged")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0

    records = [parse_event(event) for event in events]
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT trade_id, market, time_slot, seller, buyer, seller_origin, buyer_origin,"
            " energy, price, fee FROM trades").fetchall()
        bills = {row[0]: tuple(int(v) for v in row[1:]) for row in conn.execute(
            "SELECT participant, energy_sold, energy_bought, money_receivable, money_payable"
            " FROM bills").fetchall()}
    expected_rows = sorted((r.trade_id, r.market, r.time_slot, r.seller, r.buyer,
                            r.seller_origin, r.buyer_origin, Decimal(r.energy),
                            Decimal(r.price), Decimal(r.fee)) for r in records)
    assert sorted(rows) == expected_rows
    assert bills == {p: bill.as_tuple() for p, bill in compute_bills(records).items()}
    dead = client.xrange(f"{STREAM}:dead")
    reasons = sorted(fields[b"reason"].decode() for _, fields in dead)
    assert len(reasons) == 2
    assert reasons[0].startswith("The event is not JSON")
    assert "field 'energy' must not be negative" in reasons[1]
