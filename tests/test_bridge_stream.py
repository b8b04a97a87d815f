"""The bridge's Redis side on real Redis: its own pending list and dead-lettering, which
must stay exactly once when a reply is lost and the bridge does the same thing again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from worker.entries import Rejected
from worker.stream import StreamConsumer, connect_redis

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


def test_trimming_drops_only_what_every_group_settled(stream: StreamConsumer) -> None:
    """The rule of XTRIM MINID: before each group's oldest pending entry, or the one after the
    last it was delivered. An entry read but not acknowledged, one never delivered, and one a
    slower group has not read yet all stay; the backlog is what remains, oldest first."""
    ids = append(stream.client, 8)
    stream.read_new(count=5, block_ms=0)  # 0..4 delivered
    stream.ack([ids[0], ids[1], ids[3]])  # 2 and 4 still pending
    assert stream.trim_settled()[0] == 6  # 0, 1 gone; 2 (pending) holds back 3
    assert [i.decode() for i, _ in stream.client.xrange(STREAM)] == ids[2:]
    stream.ack([ids[2], ids[4]])
    length, age = stream.trim_settled()
    assert length == 3 and age is not None and age >= 0  # 5..7 never delivered
    assert [i.decode() for i, _ in stream.client.xrange(STREAM)] == ids[5:]
    # A second group that has read nothing holds everything from its start.
    stream.client.xgroup_create(STREAM, "slow", id=ids[5])
    stream.read_new(count=10, block_ms=0)
    stream.ack(ids[5:])
    assert stream.trim_settled()[0] == 2  # the slow group was delivered up to 5, not 6, 7
    stream.client.xreadgroup("slow", "reader", {STREAM: ">"})
    assert stream.trim_settled()[0] == 2  # read, not acknowledged: still unsettled
    stream.client.xack(STREAM, "slow", *ids[6:])
    assert stream.trim_settled() == (0, None)


def test_dead_letters_are_bounded_keeping_the_newest(redis_url: str) -> None:
    client = connect_redis(redis_url)
    bounded = StreamConsumer(client, STREAM, "group", "bridge", DEAD, dead_letter_maxlen=200)
    bounded.ensure_group()
    ids = append(client, 1000)
    bounded.read_new(count=1000, block_ms=0)
    bounded.dead_letter([Rejected(entry_id, "Bad.", "x") for entry_id in ids])
    # MAXLEN ~: whole macro nodes (100 entries) go, so up to one node more stays.
    assert 200 <= client.xlen(DEAD) <= 300
    assert client.xrevrange(DEAD, count=1)[0][1][b"entry_id"].decode() == ids[-1]
    client.close()
