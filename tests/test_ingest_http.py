"""The ingest's bulk-upload endpoint under real gunicorn: well-formed readings are queued (and
settle through the ingest writer), malformed ones are refused at the door by index while the
good ones of the same upload are still queued, every invalid request gets a clear 400/413."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from bridge_fixtures import wait_for_work, work_progress
from ingest_fixtures import (
    READINGS_STREAM,
    SLOT,
    Door,
    IngestThread,
    MeteredChain,
    dead_letter_reasons,
    door_env,
    ingest_settings,
    pending_count,
    reading_cases,
    recorded_on_chain,
    register_meters,
    serving,
    unmatched,
)

from ingest.readings import reading_json
from pilotchain.metering import SignedReading

MAX_READINGS = 50
MAX_BODY = 40_000


@pytest.fixture
def endpoint(redis_url: str, tmp_path: Path) -> Iterator[Door]:
    with serving(door_env(redis_url, tmp_path, INGEST_HTTP_MAX_READINGS=str(MAX_READINGS),
                          INGEST_HTTP_MAX_BODY_BYTES=str(MAX_BODY)), tmp_path) as door:
        yield door


def stream_length(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.xlen(READINGS_STREAM))
    finally:
        client.close()


def test_an_upload_queues_the_good_readings_refuses_the_bad_by_index_and_they_settle(
        endpoint: Door, metered: MeteredChain, redis_url: str) -> None:
    (meter,) = register_meters(metered, 1)
    head = metered.w3.eth.get_block("latest")["timestamp"]
    s0 = head // SLOT * SLOT - 5 * SLOT
    good = [reading_json(meter.sign(s0 + i * SLOT, 10 * i, i, domain=metered.domain))
            for i in range(3)]
    unsigned = dict(good[1])
    del unsigned["signature"]
    upload = [good[0], {**good[0], "meter": "nope"}, good[1], unsigned, good[2]]
    answer = requests.post(f"{endpoint.url}/api/readings", json=upload, headers=endpoint.auth,
                           timeout=30)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["queued"], body["refused"]) == (3, 2)
    assert [error["index"] for error in body["errors"]] == [1, 3]
    assert "'meter'" in body["errors"][0]["error"]
    assert "not signed" in body["errors"][1]["error"]
    assert "3 of 5" in body["message"] and "refused" in body["message"]
    assert stream_length(redis_url) == 3

    settings = ingest_settings(metered, redis_url)
    with IngestThread(settings) as metrics:
        wait_for_work(metered.net, lambda: (sum(recorded_on_chain(metered).values()) == 3
                                            and pending_count(redis_url, settings.group) == 0)
                      or None, progress=work_progress(metrics),
                      what="the 3 uploaded readings on chain and acknowledged")
    assert recorded_on_chain(metered) == {(meter.id, s0 + i * SLOT): 1 for i in range(3)}


def test_invalid_uploads_get_a_clear_error_and_queue_nothing(
        endpoint: Door, redis_url: str) -> None:
    url = f"{endpoint.url}/api/readings"
    cases = [
        (b"{not json", 400, "not JSON"),
        (json.dumps({"meter": "x"}).encode(), 400, "JSON array"),
        (b"[]", 400, "empty"),
        (json.dumps([{"time": 1}, 5]).encode(), 400, "None of the 2"),
        (json.dumps([{}] * (MAX_READINGS + 1)).encode(), 413, "INGEST_HTTP_MAX_READINGS"),
        (b"[" + b" " * MAX_BODY + b"]", 413, "INGEST_HTTP_MAX_BODY_BYTES"),
    ]
    for data, status, words in cases:
        answer = requests.post(url, data=data, timeout=30,
                               headers={"Content-Type": "application/json", **endpoint.auth})
        assert (answer.status_code, words in answer.json()["error"]) == (status, True), \
            (data[:40], answer.text)
    all_bad = requests.post(url, json=[{"time": 1}, 5], headers=endpoint.auth,
                            timeout=30).json()
    assert [error["index"] for error in all_bad["errors"]] == [0, 1]
    assert requests.get(url, timeout=30).status_code == 405
    assert requests.get(f"{endpoint.url}/nowhere", timeout=30).status_code == 404
    health = requests.get(f"{endpoint.url}/health", timeout=30)
    assert (health.status_code, health.json()["status"]) == (200, "ok")
    assert stream_length(redis_url) == 0


def test_every_bad_kind_uploaded_is_refused_at_the_door_or_dead_lettered_with_its_reason(
        endpoint: Door, metered: MeteredChain, redis_url: str) -> None:
    cases = reading_cases(metered)
    items = [reading_json(entry) if isinstance(entry, SignedReading) else entry
             for entry in cases.entries.values()]
    answer = requests.post(f"{endpoint.url}/api/readings", json=items, headers=endpoint.auth,
                           timeout=30)
    assert answer.status_code == 202, answer.text
    names = list(cases.entries)
    door = {names[error["index"]]: error["error"] for error in answer.json()["errors"]}
    # The malformed item arrives as a JSON string inside the array, not as broken JSON.
    assert set(door) == {"malformed JSON", "unsigned"}
    assert "not a string" in door["malformed JSON"] and "not signed" in door["unsigned"]
    later = {name: words for name, words in cases.expected.items() if name not in door}
    settings = ingest_settings(metered, redis_url)
    with IngestThread(settings) as metrics:
        wait_for_work(metered.net, lambda: (len(dead_letter_reasons(redis_url)) >= len(later)
                                            and pending_count(redis_url, settings.group) == 0)
                      or None, progress=work_progress(metrics),
                      what="every queued reading acknowledged or dead-lettered")
    reasons = dead_letter_reasons(redis_url)
    assert len(reasons) == len(later)
    assert unmatched(reasons, list(later.values())) == []
    assert recorded_on_chain(metered) == cases.recorded()
