"""Readings over real MQTT (Debian's mosquitto, authenticated): they settle on chain; malformed
messages are dead-lettered with the reason; mosquitto and Redis restarted mid-stream lose
nothing; the broker refuses anonymous and wrongly authenticated clients."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
import redis
from bridge_fixtures import START_SECONDS, wait_for_work, work_progress
from ingest_fixtures import (
    READINGS_STREAM,
    SLOT,
    IngestThread,
    MeteredChain,
    SubscriberThread,
    dead_letter_reasons,
    ingest_settings,
    pending_count,
    reading_cases,
    recorded_on_chain,
    register_meters,
    unmatched,
)
from paho.mqtt.enums import CallbackAPIVersion

from ingest.config import MqttSettings
from ingest.readings import reading_json
from pilotchain.chain import wait_for
from pilotchain.config import MqttConnection
from pilotchain.metering import SignedReading
from runner.mqtt import MqttService, connect_check
from runner.redis import RedisService, private_connection


def publisher(connection: MqttConnection) -> mqtt.Client:
    """A meter's client (the meters' account), connected, its network loop running."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="meter-under-test")
    client.username_pw_set(connection.meter_username, connection.meter_password)
    client.reconnect_delay_set(1, 1)
    client.connect(connection.host, connection.port, keepalive=10)
    client.loop_start()
    return client


def stream_length(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.xlen(READINGS_STREAM))
    except redis.RedisError:
        return 0
    finally:
        client.close()


def test_readings_over_mqtt_settle_and_malformed_messages_are_dead_lettered(
        broker: MqttService, metered: MeteredChain, redis_url: str) -> None:
    (meter,) = register_meters(metered, 1)
    connection = broker.connection
    head = metered.w3.eth.get_block("latest")["timestamp"]
    s0 = head // SLOT * SLOT - 5 * SLOT
    topic = connection.topic_for("0x" + meter.id.hex())
    settings = MqttSettings(mqtt=connection, redis_url=redis_url, stream=READINGS_STREAM)
    good = [json.dumps(reading_json(meter.sign(s0 + i * SLOT, 7 * i, i, domain=metered.domain)))
            for i in range(3)]
    writer = ingest_settings(metered, redis_url)
    with SubscriberThread(settings), IngestThread(writer) as metrics:
        client = publisher(connection)
        try:
            client.publish(topic, good[0], qos=1).wait_for_publish(30)
            client.publish(topic, b"\xff\xfe", qos=1).wait_for_publish(30)
            client.publish(topic, '{"meter": 1', qos=1).wait_for_publish(30)
            client.publish(connection.topic_for("0x" + "11" * 32), good[1],
                           qos=1).wait_for_publish(30)
            for payload in good[1:]:
                client.publish(topic, payload, qos=1).wait_for_publish(30)
        finally:
            client.loop_stop()
            client.disconnect()
        wait_for_work(metered.net, lambda: (sum(recorded_on_chain(metered).values()) == 3
                                            and len(dead_letter_reasons(redis_url)) == 3
                                            and pending_count(redis_url, writer.group) == 0)
                      or None, progress=work_progress(metrics),
                      what="3 readings on chain and 3 messages dead-lettered")
    reasons = dead_letter_reasons(redis_url)
    assert len(reasons) == 3
    assert any("not UTF-8" in reason for reason in reasons)
    assert any("not JSON" in reason for reason in reasons)
    assert any("published on the topic of meter 0x1111" in reason for reason in reasons)
    assert recorded_on_chain(metered) == {(meter.id, s0 + i * SLOT): 1 for i in range(3)}


def test_the_broker_refuses_anonymous_and_wrong_passwords(broker: MqttService) -> None:
    connection = broker.connection
    assert connect_check(connection) == 0
    assert connect_check(replace(connection, password="wrong")) != 0
    assert connect_check(replace(connection, username="nobody", password=None)) != 0
    assert broker.status() == {"mqtt_url": f"mqtt://127.0.0.1:{connection.port}"}


def test_mosquitto_and_redis_restarted_mid_stream_lose_nothing(
        broker: MqttService, metered: MeteredChain, tmp_path: Path) -> None:
    own_redis = RedisService(private_connection(), tmp_path / "redis", tmp_path / "redis-pids")
    own_redis.start()
    try:
        meters = register_meters(metered, 4)
        connection = broker.connection
        head = metered.w3.eth.get_block("latest")["timestamp"]
        start = head // SLOT * SLOT - 40 * SLOT
        messages = [(connection.topic_for("0x" + meter.id.hex()),
                     json.dumps(reading_json(meter.sign(start + i * SLOT, 5 * i, 2 * i,
                                                        domain=metered.domain))))
                    for i in range(40) for meter in meters]
        settings = MqttSettings(mqtt=connection, redis_url=own_redis.url,
                                stream=READINGS_STREAM, backoff_max=1.0)
        writer = ingest_settings(metered, own_redis.url)
        done = threading.Event()

        def publish_all() -> None:
            client = publisher(connection)
            acknowledged: set[int] = set()
            client.on_publish = lambda _c, _u, mid, _r, _p: acknowledged.add(mid)
            try:
                for topic, payload in messages:
                    mid = client.publish(topic, payload, qos=1).mid
                    # One reading in flight at a time, as a meter sends them: paho queues a
                    # message published while it reconnects as soon as the socket is open,
                    # but sends the ones it kept from before only on the broker's CONNACK, so
                    # a newer reading would overtake older ones, which the contract then
                    # refuses as out of order (a busy machine widens that window). A message
                    # published while the broker is away is kept and sent on reconnection
                    # (paho's MessageInfo then reports "not connected" for good).
                    wait_for(lambda m=mid: m in acknowledged or None,  # type: ignore[misc]
                             timeout=START_SECONDS,
                             what=f"the broker's acknowledgement of message {mid}")
                    done.wait(0.02)  # a meter fleet's pace, not synchronisation
            finally:
                client.loop_stop()
                client.disconnect()
                done.set()

        with SubscriberThread(settings), IngestThread(writer) as metrics:
            thread = threading.Thread(target=publish_all, name="meters")
            thread.start()
            wait_for(lambda: stream_length(own_redis.url) >= 30 or None, timeout=START_SECONDS,
                     what="30 readings on the stream before restarting mosquitto")
            assert broker.stop()
            assert broker.start()
            wait_for(lambda: stream_length(own_redis.url) >= 90 or None, timeout=START_SECONDS,
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
    good_topic = connection.topic_for("0x" + cases.good_meter.id.hex())
    messages = []
    for entry in cases.entries.values():
        if isinstance(entry, SignedReading):
            topic = connection.topic_for("0x" + entry.reading.meter.hex())
            messages.append((topic, json.dumps(reading_json(entry))))
        else:
            messages.append((good_topic, entry if isinstance(entry, str) else json.dumps(entry)))
    settings = MqttSettings(mqtt=connection, redis_url=redis_url, stream=READINGS_STREAM)
    writer = ingest_settings(metered, redis_url)
    with SubscriberThread(settings), IngestThread(writer) as metrics:
        client = publisher(connection)
        try:
            for topic, payload in messages:
                client.publish(topic, payload, qos=1).wait_for_publish(30)
        finally:
            client.loop_stop()
            client.disconnect()
        wait_for_work(metered.net,
                      lambda: (len(dead_letter_reasons(redis_url)) >= len(cases.expected)
                               and pending_count(redis_url, writer.group) == 0) or None,
                      progress=work_progress(metrics),
                      what="every message settled or dead-lettered")
    reasons = dead_letter_reasons(redis_url)
    assert len(reasons) == len(cases.expected)
    assert unmatched(reasons, list(cases.expected.values())) == []
    assert recorded_on_chain(metered) == cases.recorded()
