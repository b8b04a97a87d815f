"""Readings over real MQTT (Debian's mosquitto, authenticated): they settle on chain; malformed
messages are dead-lettered with the reason; mosquitto and Redis restarted mid-stream lose
nothing; the broker refuses anonymous and wrongly authenticated clients, and a meter's
account publishes on its own topic only."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from bridge_fixtures import START_SECONDS, wait_for_work, work_progress
from ingest_fixtures import (
    READINGS_STREAM,
    SLOT,
    IngestThread,
    MeterClients,
    MeteredChain,
    SubscriberThread,
    dead_letter_reasons,
    ingest_settings,
    meter_accounts,
    pending_count,
    reading_cases,
    recorded_on_chain,
    register_meters,
    unmatched,
)

from ingest.config import MqttSettings
from ingest.readings import reading_json
from pilotchain.chain import wait_for
from pilotchain.meter_accounts import account_name
from pilotchain.metering import SignedReading
from runner.mqtt import MqttService, connect_check
from runner.redis import RedisService, private_connection


def test_readings_over_mqtt_settle_and_malformed_messages_are_dead_lettered(
        broker: MqttService, metered: MeteredChain, redis_url: str) -> None:
    (meter,) = register_meters(metered, 1)
    passwords = meter_accounts(broker, [meter.id])
    connection = broker.connection
    head = metered.w3.eth.get_block("latest")["timestamp"]
    s0 = head // SLOT * SLOT - 5 * SLOT
    settings = MqttSettings(mqtt=connection, redis_url=redis_url, stream=READINGS_STREAM)
    good = [json.dumps(reading_json(meter.sign(s0 + i * SLOT, 7 * i, i, domain=metered.domain)))
            for i in range(3)]
    writer = ingest_settings(metered, redis_url)
    with SubscriberThread(settings) as received, IngestThread(writer) as metrics, \
            MeterClients(connection, passwords) as meters:
        meters.publish(meter.id, good[0]).wait_for_publish(30)
        meters.publish(meter.id, b"\xff\xfe").wait_for_publish(30)
        meters.publish(meter.id, '{"meter": 1').wait_for_publish(30)
        # On another meter's topic: its access list lets a meter publish on its own only, so
        # the broker drops it (the subscriber would dead-letter it if it came through).
        meters.publish(meter.id, good[1], topic_of=b"\x11" * 32).wait_for_publish(30)
        for payload in good[1:]:
            meters.publish(meter.id, payload).wait_for_publish(30)
        wait_for_work(metered.net, lambda: (sum(recorded_on_chain(metered).values()) == 3
                                            and len(dead_letter_reasons(redis_url)) == 2
                                            and pending_count(redis_url, writer.group) == 0)
                      or None, progress=work_progress(metrics),
                      what="3 readings on chain and 2 messages dead-lettered")
        # Messages of one client arrive in order: the last good one came, the foreign one not.
        assert received.get("received") == 5
    reasons = dead_letter_reasons(redis_url)
    assert len(reasons) == 2
    assert any("not UTF-8" in reason for reason in reasons)
    assert any("not JSON" in reason for reason in reasons)
    assert recorded_on_chain(metered) == {(meter.id, s0 + i * SLOT): 1 for i in range(3)}


def test_the_broker_refuses_anonymous_wrong_passwords_and_the_retired_shared_account(
        broker: MqttService) -> None:
    connection = broker.connection
    meter = b"\x22" * 32
    (password,) = meter_accounts(broker, [meter]).values()
    assert connect_check(connection) == 0  # the monitor
    assert connect_check(connection, account_name(meter), password) == 0
    assert connect_check(connection, account_name(meter), "wrong") != 0
    assert connect_check(connection, connection.username, "wrong") != 0
    assert connect_check(connection, "nobody", None) != 0
    assert connect_check(connection, "meter", "any") != 0  # no shared meters' account
    assert broker.status() == {"mqtt_url": f"mqtt://127.0.0.1:{connection.port}"}


def test_mosquitto_and_redis_restarted_mid_stream_lose_nothing(
        broker: MqttService, metered: MeteredChain, tmp_path: Path) -> None:
    own_redis = RedisService(private_connection(), tmp_path / "redis", tmp_path / "redis-pids")
    own_redis.start()
    try:
        meters = register_meters(metered, 4)
        passwords = meter_accounts(broker, [meter.id for meter in meters])
        connection = broker.connection
        head = metered.w3.eth.get_block("latest")["timestamp"]
        start = head // SLOT * SLOT - 40 * SLOT
        messages = [(meter.id, json.dumps(reading_json(meter.sign(start + i * SLOT, 5 * i,
                                                                  2 * i,
                                                                  domain=metered.domain))))
                    for i in range(40) for meter in meters]
        settings = MqttSettings(mqtt=connection, redis_url=own_redis.url,
                                stream=READINGS_STREAM, backoff_max=1.0)
        writer = ingest_settings(metered, own_redis.url)
        done = threading.Event()

        def publish_all() -> None:
            clients = MeterClients(connection, passwords)
            try:
                for number, (meter_id, payload) in enumerate(messages):
                    sent = (meter_id, clients.publish(meter_id, payload).mid)
                    # Each reading once the broker has the one before, as a meter sends its
                    # own: paho sends a message published right after reconnecting before the
                    # ones it kept while the broker was away, and a meter's readings out of
                    # order are refused by the contract (OutOfOrder). A message published
                    # while the broker was away is kept and sent on reconnection (paho's
                    # MessageInfo then reports "not connected" for good: hence on_publish).
                    wait_for(lambda s=sent: s in clients.acknowledged or None,
                             timeout=START_SECONDS,
                             what=f"the broker's acknowledgement of reading {number}")
                    done.wait(0.02)  # a meter fleet's pace, not synchronisation
            finally:
                clients.close()
                done.set()

        # The writer trims what it settled: progress is what the subscriber handed on.
        with SubscriberThread(settings) as subscriber, IngestThread(writer) as metrics:
            thread = threading.Thread(target=publish_all, name="meters")
            thread.start()
            wait_for(lambda: subscriber.get("settled") >= 30 or None, timeout=START_SECONDS,
                     what="30 readings on the stream before restarting mosquitto")
            assert broker.stop()
            assert broker.start()
            wait_for(lambda: subscriber.get("settled") >= 90 or None, timeout=START_SECONDS,
                     what="90 readings on the stream before restarting Redis")
            assert own_redis.stop()
            assert own_redis.start()
            thread.join(timeout=3 * START_SECONDS)
            assert done.is_set()
            wait_for_work(metered.net,
                          lambda: (sum(recorded_on_chain(metered).values()) >= len(messages)
                                   and pending_count(own_redis.url, writer.group) == 0) or None,
                          progress=work_progress(metrics),
                          what="all 160 readings on chain and acknowledged")
        recorded = recorded_on_chain(metered)
        assert len(recorded) == len(messages) and set(recorded.values()) == {1}
        assert dead_letter_reasons(own_redis.url) == []
    finally:
        own_redis.stop()


def test_every_bad_kind_published_is_dead_lettered_with_its_reason_while_the_good_settle(
        broker: MqttService, metered: MeteredChain, redis_url: str) -> None:
    cases = reading_cases(metered)
    connection = broker.connection
    good = cases.good_meter.id
    messages = []
    for entry in cases.entries.values():
        if isinstance(entry, SignedReading):
            messages.append((entry.reading.meter, json.dumps(reading_json(entry))))
        else:
            messages.append((good, entry if isinstance(entry, str) else json.dumps(entry)))
    # Every meter publishing has an account, the unregistered one too: the broker knows
    # accounts, the writer knows the chain's registry (and dead-letters it, UnknownMeter).
    passwords = meter_accounts(broker, list(dict.fromkeys(meter for meter, _ in messages)))
    settings = MqttSettings(mqtt=connection, redis_url=redis_url, stream=READINGS_STREAM)
    writer = ingest_settings(metered, redis_url)
    with SubscriberThread(settings), IngestThread(writer) as metrics:
        with MeterClients(connection, passwords) as clients:
            for meter_id, payload in messages:
                clients.publish(meter_id, payload).wait_for_publish(30)
        wait_for_work(metered.net,
                      lambda: (len(dead_letter_reasons(redis_url)) >= len(cases.expected)
                               and pending_count(redis_url, writer.group) == 0) or None,
                      progress=work_progress(metrics),
                      what="every message settled or dead-lettered")
    reasons = dead_letter_reasons(redis_url)
    assert len(reasons) == len(cases.expected)
    assert unmatched(reasons, list(cases.expected.values())) == []
    assert recorded_on_chain(metered) == cases.recorded()
