"""The MQTT subscriber: each meter's readings from the broker onto the readings stream.

Subscribed with QoS 1 in a persistent session (a fixed client id, no clean start), and each
message acknowledged to the broker only once its reading is in Redis (or its dead letter
is): while the subscriber or Redis is away, the broker keeps the messages; a message whose
acknowledgement was lost comes again and is recognised as a repeat (MQTT's dup flag and
the same payload) so it is not appended twice. A malformed message is dead-lettered with
the reason at once; the ingest writer checks the rest against the chain.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from bridge.loop import Backoff
from bridge.metrics import Metrics
from bridge.stream import TRANSIENT, connect_redis
from ingest.config import MqttSettings
from ingest.readings import READING_FIELD, meter_bytes, parse_reading, reading_json
from pilotchain.config import masked_url
from pilotchain.metering import MeteringError

log = logging.getLogger("ingest.mqtt")
# Payload digests of recently appended messages, to recognise a redelivered one.
RECENT = 100_000


def message_entry(pattern: str, topic: str, payload: bytes) -> tuple[str | None, str | None]:
    """(the stream's reading JSON, None) for a good message, (None, reason) for a bad one."""
    try:
        text = payload.decode("utf-8")
        value = json.loads(text)
    except UnicodeDecodeError:
        return None, "The message is not UTF-8 text; a reading is a JSON object."
    except json.JSONDecodeError as error:
        return None, f"The reading is not JSON: {error.msg} at character {error.pos}."
    try:
        signed = parse_reading(value)
    except MeteringError as error:
        return None, str(error)
    parts, names = pattern.split("/"), topic.split("/")
    if "+" in parts and len(parts) == len(names):
        named = names[parts.index("+")]
        try:
            topic_meter = meter_bytes(named)
        except MeteringError:
            return None, (f"The topic {topic} names no meter ({named!r} is neither a uuid nor "
                          "0x and 64 hex digits).")
        if topic_meter != signed.reading.meter:
            return None, (f"The reading of meter 0x{signed.reading.meter.hex()} was published "
                          f"on the topic of meter {named}.")
    return json.dumps(reading_json(signed)), None


class Subscriber:
    """One subscriber process's work; ``run`` returns when ``stop`` is set."""

    def __init__(self, settings: MqttSettings, metrics: Metrics | None = None,
                 stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.stop = stop or threading.Event()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.redis = connect_redis(settings.redis_url)
        self._recent: OrderedDict[bytes, None] = OrderedDict()

    def run(self) -> None:
        s = self.settings
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=s.client_id,
                             clean_session=False, manual_ack=True)
        client.username_pw_set(s.mqtt.username, s.mqtt.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = lambda _client, _data, message: self.messages.put(message)
        client.reconnect_delay_set(1, max(1, int(s.backoff_max)))
        client.connect_async(s.mqtt.host, s.mqtt.port, keepalive=30)
        client.loop_start()
        log.info("Subscribing to %s at %s; appending to %s in Redis at %s.", s.mqtt.topic,
                 s.mqtt.url, s.stream, masked_url(s.redis_url))
        try:
            while not self.stop.is_set():
                try:
                    message = self.messages.get(timeout=0.2)
                except queue.Empty:
                    continue
                if self._store(message):
                    client.ack(message.mid, message.qos)
        finally:
            client.loop_stop()
            client.disconnect()

    def _on_connect(self, client: mqtt.Client, _data: Any, _flags: Any, reason: ReasonCode,
                    _properties: Properties | None) -> None:
        if reason.is_failure:
            problem = f"The broker at {self.settings.mqtt.url} refused the ingest: {reason}."
            log.warning("%s Check MQTT_USERNAME and MQTT_PASSWORD_FILE.", problem)
            self.metrics.set(state="degraded", problem=problem, chain="n/a")
            return
        client.subscribe(self.settings.mqtt.topic, qos=1)
        self.metrics.set(state="running", problem=None, chain="n/a")
        log.info("Connected to the broker at %s.", self.settings.mqtt.url)

    def _on_disconnect(self, _client: mqtt.Client, _data: Any, _flags: Any,
                       reason: ReasonCode, _properties: Properties | None) -> None:
        if not self.stop.is_set():
            problem = f"The broker at {self.settings.mqtt.url} went away ({reason}); reconnecting."
            log.warning("%s", problem)
            self.metrics.set(state="degraded", problem=problem)

    def _store(self, message: mqtt.MQTTMessage) -> bool:
        """Append the message's reading (or its dead letter); retry while Redis is away.
        False if stopped before it was stored (the broker then delivers it again)."""
        payload = bytes(message.payload)
        digest = hashlib.sha256(message.topic.encode() + b"\0" + payload).digest()
        self.metrics.add("received")
        if message.dup and digest in self._recent:
            self.metrics.add("duplicates")
            return True
        reading, reason = message_entry(self.settings.mqtt.topic, message.topic, payload)
        backoff = Backoff(self.settings.backoff_max)
        while True:
            try:
                self._append(message, reading, reason)
                break
            except TRANSIENT as error:
                self.metrics.set(redis="unreachable", state="degraded",
                                 problem=f"Redis is unreachable ({error}).")
                if self.stop.wait(backoff.next()):
                    return False
        self.metrics.set(redis="ok", state="running", problem=None)
        self._recent[digest] = None
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        return True

    def _append(self, message: mqtt.MQTTMessage, reading: str | None,
                reason: str | None) -> None:
        s = self.settings
        source = f"mqtt {message.topic}"
        if reading is not None:
            self.redis.xadd(s.stream, {READING_FIELD: reading, "source": source})
            self.metrics.add("settled")  # handed on to the writer
            return
        assert reason is not None
        log.warning("Dead-lettering a message on %s: %s", message.topic, reason)
        self.redis.xadd(s.dead_letter_stream, {
            "reason": reason, "entry_id": "", "stream": s.stream, "source": source,
            "event": message.payload.decode("utf-8", errors="replace"),
            "rejected_at": datetime.now(UTC).isoformat(timespec="milliseconds")})
        self.metrics.add("dead_lettered")
