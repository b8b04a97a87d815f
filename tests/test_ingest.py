"""The meter ingest on the real chain and Redis: good readings settle once, every bad kind is
dead-lettered with its reason while the good ones around it settle, and kill -9 during 5,000
readings loses or repeats none."""

from __future__ import annotations

from pathlib import Path

import redis
from bridge_fixtures import START_SECONDS, mined, wait_for_work, work_progress
from ingest_fixtures import (
    SLOT,
    IngestProcess,
    IngestThread,
    MeteredChain,
    dead_letters,
    ingest_settings,
    pending_count,
    publish_readings,
    reading_cases,
    recorded_on_chain,
    register_meters,
)

from pilotchain.chain import Sender, wait_for


def test_good_readings_settle_once_and_each_bad_kind_is_dead_lettered_with_its_reason(
        metered: MeteredChain, redis_url: str) -> None:
    cases = reading_cases(metered)
    entries, expected = cases.entries, cases.expected
    good_meter, s0 = cases.good_meter, cases.s0
    ids = dict(zip(entries, publish_readings(redis_url, list(entries.values())), strict=True))
    settings = ingest_settings(metered, redis_url)
    with IngestThread(settings) as metrics:
        wait_for_work(metered.net, lambda: (len(dead_letters(redis_url)) >= len(expected)
                                            and pending_count(redis_url, settings.group) == 0)
                      or None, progress=work_progress(metrics),
                      what="every entry acknowledged or dead-lettered")
    reasons = dead_letters(redis_url)
    assert set(reasons) == {ids[name] for name in expected}, reasons
    wrong = {name: reasons[ids[name]] for name, words in expected.items()
             if words not in reasons[ids[name]]}
    assert wrong == {}
    assert recorded_on_chain(metered) == cases.recorded()
    stored = metered.contract.functions.readingOf(good_meter.id, s0 + 3 * SLOT).call()
    assert stored[:3] == [True, 20, 10]
    # A checked minute reading is neither refused nor on chain: kept for the participant view.
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    minutes = [fields["entry_id"] for _, fields in client.xrange(settings.minutes_stream)]
    client.close()
    assert minutes == [ids["minute reading"]]


def test_kill_9_during_5000_readings_settles_each_exactly_once(
        metered: MeteredChain, redis_url: str, tmp_path: Path) -> None:
    meters = register_meters(metered, 50)
    domain = metered.domain
    head = metered.w3.eth.get_block("latest")["timestamp"]
    start = head // SLOT * SLOT - 100 * SLOT
    readings = [meter.sign(start + i * SLOT, 10 * i, 3 * i, domain=domain)
                for i in range(100) for meter in meters]  # time order, meters interleaved
    publish_readings(redis_url, readings)
    settings = ingest_settings(metered, redis_url)
    process = IngestProcess(settings, tmp_path / "ingest.log")

    def settled(at_least: int) -> bool | None:
        metrics = process.metrics()
        return True if metrics and metrics["settled"] >= at_least else None

    # Counted while the ingest gets no further (a restarted one starts from nothing).
    progress = work_progress(process.metrics, lambda: pending_count(redis_url, settings.group))
    try:
        for kill_after in (700, 1200):
            process.start()
            wait_for_work(metered.net, lambda at=kill_after: settled(at),  # type: ignore[misc]
                          progress=progress,
                          what=f"{kill_after} readings settled before the kill")
            process.kill()
        process.start()
        wait_for_work(metered.net,
                      lambda: (sum(recorded_on_chain(metered).values()) >= len(readings)
                               and pending_count(redis_url, settings.group) == 0) or None,
                      progress=progress, what="all 5,000 readings on chain and acknowledged")
    except BaseException as error:
        error.add_note(process.log_tail())
        raise
    finally:
        process.stop()
    recorded = recorded_on_chain(metered)
    assert len(recorded) == len(readings)
    assert set(recorded.values()) == {1}
    assert dead_letters(redis_url) == {}


def test_a_slot_length_set_after_the_ingest_started_decides_what_goes_on_chain(
        metered: MeteredChain, redis_url: str) -> None:
    """Until the first meter is registered the operator may change the slot length; an ingest
    started before that must follow it, not the length it read at start (900 s)."""
    slot = 120
    settings = ingest_settings(metered, redis_url)
    with IngestThread(settings) as metrics:
        wait_for(lambda: metrics.get("state") == "running" or None, timeout=START_SECONDS,
                 what="the ingest to run")
        sender = Sender(metered.w3, metered.net.keys.role("operator").unlock())
        data = metered.contract.encode_abi("setSlotSeconds", args=[slot])
        tx_hash = sender.send({"to": metered.contract.address, "data": data})
        assert mined(metered.w3, tx_hash)["status"] == 1
        meter = register_meters(metered, 1)[0]
        head = metered.w3.eth.get_block("latest")["timestamp"]
        # Boundaries of the new length that are not boundaries of the old one: the ingest
        # would otherwise keep them off chain as minute readings.
        times = [t for t in range(head // slot * slot - 20 * slot, head, slot) if t % SLOT][-2:]
        publish_readings(redis_url, [meter.sign(t, 5 * i, i, domain=metered.domain)
                                     for i, t in enumerate(times)])
        expected = {(meter.id, t): 1 for t in times}
        wait_for_work(metered.net, lambda: dict(recorded_on_chain(metered)) == expected or None,
                      progress=work_progress(metrics), what="both readings on chain")
    assert dead_letters(redis_url) == {}
