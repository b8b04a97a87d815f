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
import secrets
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import redis
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ingest.config import MqttSettings
from ingest.readings import READING_FIELD, load_json, meter_bytes, parse_reading, reading_json
from pilotchain.config import masked_url
from pilotchain.metering import MeteringError
from worker.metrics import DEAD_LETTERED, DUPLICATES, RECEIVED, REDIS, Counter, Metrics
from worker.retry import Backoff
from worker.stream import TRANSIENT, connect_redis, out_of_memory

log = logging.getLogger("ingest.mqtt")
# Payload digests of recently appended messages, to recognise a redelivered one.
RECENT = 100_000
# How long /health says "degraded" after the subscriber lost its broker session: a session
# lost now and then (a broker restart) heals by itself; lost again and again, someone else
# holds the ingest's account, and each time the broker may have dropped messages.
SESSION_WARNING_WINDOW = 300.0
# KEYS: the stream, the subscriber's last-append key. ARGV: the backlog limit, the reading,
# its source, the append's token. 1 appended, 2 appended already, 0 no room.
# The token makes a retry idempotent: when Redis goes away after running the script but
# before its reply arrives, the retry finds its own token and appends nothing twice. One
# key suffices: the subscriber appends one message at a time, and only one subscriber can
# hold the ingest's account (its client id is the account).
_APPEND = f"""
if redis.call('GET', KEYS[2]) == ARGV[4] then return 2 end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('XADD', KEYS[1], '*', '{READING_FIELD}', ARGV[2], 'source', ARGV[3])
redis.call('SET', KEYS[2], ARGV[4])
return 1
"""


# What the subscriber measures: messages in, readings handed on to the stream, repeats and
# dead letters, and its link to Redis (it has no chain to report).
HANDED_ON = Counter("settled", "pilotchain_entries_settled",
                    "Readings appended to the reading stream (handed on to the ingest writer).")
SUBSCRIBER_METRICS = (RECEIVED, HANDED_ON, DUPLICATES, DEAD_LETTERED, REDIS)


class QueueFull(Exception):
    """The stream holds INGEST_MAX_BACKLOG unsettled readings: wait, the broker keeps the
    message meanwhile (it is not acknowledged)."""


def message_entry(pattern: str, topic: str, payload: bytes) -> tuple[str | None, str | None]:
    """(the stream's reading JSON, None) for a good message, (None, reason) for a bad one."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None, "The message is not UTF-8 text; a reading is a JSON object."
    try:
        signed = parse_reading(load_json(text))
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
        self.metrics.declare(*SUBSCRIBER_METRICS)
        self.stop = stop or threading.Event()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.redis = connect_redis(settings.redis_url)
        self._append_script = self.redis.register_script(_APPEND)
        self._recent: OrderedDict[bytes, None] = OrderedDict()
        self._connected_once = False
        self._losses: list[tuple[float, str]] = []  # (monotonic time, what happened)
        self._lock = threading.Lock()  # paho's thread records losses, the loop reads them

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
                self.metrics.set(warning=self._session_warning())
                try:
                    message = self.messages.get(timeout=0.2)
                except queue.Empty:
                    continue
                if self._store(message):
                    client.ack(message.mid, message.qos)
        finally:
            client.loop_stop()
            client.disconnect()

    def _on_connect(self, client: mqtt.Client, _data: Any, flags: Any, reason: ReasonCode,
                    _properties: Properties | None) -> None:
        if reason.is_failure:
            problem = f"The broker at {self.settings.mqtt.url} refused the ingest: {reason}."
            log.warning("%s Check MQTT_USERNAME and MQTT_PASSWORD_FILE.", problem)
            self.metrics.set(state="degraded", problem=problem)
            return
        if self._connected_once and not getattr(flags, "session_present", True):
            # The broker had no session for us: it was discarded (another client connected
            # with a clean session under our id, or the broker lost its store), and with it
            # any readings it held for us.
            self._lost("the broker had discarded its session, with any readings it held")
        self._connected_once = True
        client.subscribe(self.settings.mqtt.topic, qos=1)
        self.metrics.set(state="running", problem=None, warning=self._session_warning())
        log.info("Connected to the broker at %s.", self.settings.mqtt.url)

    def _on_disconnect(self, _client: mqtt.Client, _data: Any, _flags: Any,
                       reason: ReasonCode, _properties: Properties | None) -> None:
        if not self.stop.is_set():
            problem = f"The broker at {self.settings.mqtt.url} went away ({reason}); reconnecting."
            log.warning("%s", problem)
            self._lost(f"the connection ended ({reason})")
            self.metrics.set(state="degraded", problem=problem)

    def _lost(self, what: str) -> None:
        with self._lock:
            self._losses.append((time.monotonic(), what))

    def _session_warning(self) -> str | None:
        """A sentence while the broker session was lost within SESSION_WARNING_WINDOW."""
        now = time.monotonic()
        with self._lock:
            self._losses = [(at, what) for at, what in self._losses
                            if now - at < SESSION_WARNING_WINDOW]
            if not self._losses:
                return None
            count, (at, what) = len(self._losses), self._losses[-1]
        times = "once" if count == 1 else f"{count} times"
        return (f"The subscriber lost its broker session {times} in the last "
                f"{SESSION_WARNING_WINDOW / 60:.0f} minutes, last {now - at:.0f} s ago: {what}. "
                "Readings the broker held for it may be lost; if this repeats, another client "
                f"is connecting as the ingest's account ({self.settings.mqtt.username}).")

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
        token = secrets.token_hex(8)  # the same on every retry of this message
        while True:
            try:
                self._append(message, reading, reason, token)
                break
            except TRANSIENT as error:
                self.metrics.set(redis="unreachable", state="degraded",
                                 problem=f"Redis is unreachable ({error}).")
            except QueueFull:
                self.metrics.set(state="degraded", problem=(
                    f"The reading stream holds {self.settings.max_backlog} unsettled readings "
                    "(INGEST_MAX_BACKLOG); the subscriber waits for the writer, and the broker "
                    "keeps the meters' messages meanwhile."))
            except redis.ResponseError as error:
                if not out_of_memory(error):
                    raise
                self.metrics.set(state="degraded", problem=(
                    "Redis is out of memory (maxmemory) and refuses new readings; the "
                    "subscriber waits, and the broker keeps the meters' messages meanwhile."))
            if self.stop.wait(backoff.next()):
                return False
        self.metrics.set(redis="ok", state="running", problem=None)
        self._recent[digest] = None
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        return True

    def _append(self, message: mqtt.MQTTMessage, reading: str | None,
                reason: str | None, token: str) -> None:
        s = self.settings
        source = f"mqtt {message.topic}"
        if reading is not None:
            if not self._append_script(keys=[s.stream, f"{s.stream}:mqtt:last-append"],
                                       args=[s.max_backlog, reading, source, token]):
                raise QueueFull
            self.metrics.add("settled")  # handed on to the writer
            return
        assert reason is not None
        log.warning("Dead-lettering a message on %s: %s", message.topic, reason)
        self.redis.xadd(s.dead_letter_stream, {
            "reason": reason, "entry_id": "", "stream": s.stream, "source": source,
            "event": message.payload.decode("utf-8", errors="replace"),
            "rejected_at": datetime.now(UTC).isoformat(timespec="milliseconds")},
            maxlen=s.dead_letter_maxlen, approximate=True)
        self.metrics.add("dead_lettered")
