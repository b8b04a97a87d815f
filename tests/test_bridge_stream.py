"""The bridge's Redis side on real Redis: its own pending list and dead-lettering, which
must stay exactly once when a reply is lost and the bridge does the same thing again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from bridge.events import Rejected
from bridge.stream import StreamConsumer, connect_redis

STREAM = "stream-test:trades"
DEAD = "stream-test:dead"


@pytest.fixture
def stream(redis_url: str) -> Iterator[StreamConsumer]:
    client = connect_redis(redis_url)
    trades = StreamConsumer(client, STREAM, "group", "bridge", DEAD)
    trades.ensure_group()
    yield trades
    client.close()


def append(client: redis.Redis, count: int) -> list[str]:
    return [client.xadd(STREAM, {"event": f"payload {n}"}).decode() for n in range(count)]


def test_own_pending_lists_what_was_delivered_to_this_consumer_only(
        stream: StreamConsumer) -> None:
    ids = append(stream.client, 5)
    stream.client.xreadgroup("group", "bridge", {STREAM: ">"}, count=3)
    stream.client.xreadgroup("group", "other", {STREAM: ">"}, count=2)
    pages = list(stream.own_pending(count=2))
    assert [len(page) for page in pages] == [2, 1]
    assert [entry_id for page in pages for entry_id, _ in page] == ids[:3]
    assert pages[0][0][1] == {"event": "payload 0"}
    assert stream.own_pending_count() == 3
    stream.ack(ids[:3])
    assert list(stream.own_pending()) == []
    assert stream.own_pending_count() == 0


def test_an_entry_deleted_while_pending_is_listed_without_fields(stream: StreamConsumer) -> None:
    ids = append(stream.client, 2)
    stream.client.xreadgroup("group", "bridge", {STREAM: ">"})
    stream.client.xdel(STREAM, ids[0])
    entries = [entry for page in stream.own_pending() for entry in page]
    assert entries == [(ids[0], None), (ids[1], {"event": "payload 1"})]


def test_dead_lettering_twice_records_one_dead_letter(stream: StreamConsumer) -> None:
    ids = append(stream.client, 3)
    stream.read_new(count=10, block_ms=0)
    rejected = [Rejected(ids[0], "The event is not JSON.", "payload 0"),
                Rejected(ids[2], "Bad uuid.", "payload 2")]
    stream.dead_letter(rejected)
    stream.dead_letter(rejected)  # what a retry after a lost reply does
    letters = stream.client.xrange(DEAD)
    assert [(f[b"entry_id"].decode(), f[b"reason"].decode(), f[b"event"].decode())
            for _, f in letters] == [(ids[0], "The event is not JSON.", "payload 0"),
                                     (ids[2], "Bad uuid.", "payload 2")]
    assert all(f[b"stream"] == STREAM.encode() and f[b"rejected_at"] for _, f in letters)
    assert [entry_id for page in stream.own_pending() for entry_id, _ in page] == [ids[1]]
