"""Fixtures and helpers of the meter ingest tests: a fresh Settlement whose reader is the
chain's `ingest` account (funded and granted by the deployment step), registered meters,
signed readings, the ingest in a thread or as a real process, and reading the results back.

Loaded as a pytest plug-in by conftest.py, like bridge_fixtures.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import redis
from bridge_fixtures import START_SECONDS, ServiceProcess, ServiceThread, mined_all
from eth_account import Account
from eth_account.signers.local import LocalAccount
from paho.mqtt.enums import CallbackAPIVersion
from web3 import Web3
from web3.contract import Contract

from ingest.config import HttpSettings, IngestSettings, MqttSettings
from ingest.mqtt import Subscriber
from ingest.pipeline import Ingest
from ingest.readings import READING_FIELD, reading_json
from ingest.uploaders import Uploaders
from pilotchain.chain import Sender, connect, wait_for
from pilotchain.config import MqttConnection
from pilotchain.contract import (
    Deployment,
    compile_settlement,
    deploy_settlement,
    load_deployment,
    save_deployment,
    settlement_contract,
)
from pilotchain.deployment import ensure_reader
from pilotchain.events import READING_RECORDED
from pilotchain.meter_accounts import MeterAccounts, account_name
from pilotchain.metering import Domain, MeterReading, SignedReading, meter_id, sign_reading
from pilotchain.settings import PROJECT_ROOT
from runner.ingest import IngestHttpService
from runner.localnet import LocalNetwork
from runner.mqtt import MqttService, connect_check, private_mqtt
from runner.ports import free_port
from worker.metrics import Metrics

READINGS_STREAM = "test:readings"
SLOT = 900

__all__ = [
    "READINGS_STREAM",
    "SLOT",
    "Door",
    "IngestProcess",
    "IngestThread",
    "Meter",
    "MeterClients",
    "MeteredChain",
    "ReadingCases",
    "SubscriberThread",
    "broker",
    "dead_letter_reasons",
    "dead_letters",
    "door_env",
    "ingest_settings",
    "meter_accounts",
    "metered",
    "pending_count",
    "publish_readings",
    "reading_cases",
    "recorded_on_chain",
    "register_meters",
    "serving",
    "unmatched",
]


@dataclass(frozen=True)
class MeteredChain:
    """A Settlement for one test whose reader is keys/ingest."""

    net: LocalNetwork
    record: Path
    deployment: Deployment
    w3: Web3
    contract: Contract
    domain: Domain


@dataclass(frozen=True)
class Meter:
    """A throwaway meter: its id and key."""

    id: bytes
    key: LocalAccount
    participant: bytes

    def sign(self, time: int, import_wh: int, export_wh: int,
             key: LocalAccount | None = None, domain: Domain | None = None) -> SignedReading:
        assert domain is not None
        return sign_reading(MeterReading(self.id, time, import_wh, export_wh),
                            key or self.key, domain)


@dataclass(frozen=True)
class ReadingCases:
    """Good readings and one of each bad kind, in an order that makes each bad (the good ones
    of a meter before its out-of-order, backwards or duplicate one)."""

    entries: dict[str, SignedReading | dict[str, Any] | str]
    expected: dict[str, str]  # bad case -> words its dead-letter reason holds
    good_meter: Meter
    other_meter: Meter
    s0: int

    def recorded(self) -> dict[tuple[bytes, int], int]:
        """What the chain must hold afterwards: each good boundary reading once."""
        s0, good, other = self.s0, self.good_meter.id, self.other_meter.id
        return {(good, s0): 1, (good, s0 + SLOT): 1, (other, s0 + 2 * SLOT): 1,
                (good, s0 + 3 * SLOT): 1}


def reading_cases(target: MeteredChain) -> ReadingCases:
    """Two registered meters and readings of every kind, good and bad."""
    good_meter, other_meter = register_meters(target, 2)
    domain = target.domain
    head = target.w3.eth.get_block("latest")["timestamp"]
    s0 = head // SLOT * SLOT - 10 * SLOT
    unregistered = Meter(meter_id(uuid.uuid4()), Account.create(), bytes(32))
    first = good_meter.sign(s0, 0, 0, domain=domain)
    unsigned = {**reading_json(good_meter.sign(s0 + SLOT, 1, 1, domain=domain))}
    del unsigned["signature"]
    entries: dict[str, SignedReading | dict[str, Any] | str] = {
        "good 1": first,
        "malformed JSON": '{"meter": ',
        "unsigned": unsigned,
        "wrongly signed": good_meter.sign(s0 + SLOT, 5, 5, key=Account.create(), domain=domain),
        "unregistered": unregistered.sign(s0, 0, 0, domain=domain),
        "good 2": good_meter.sign(s0 + SLOT, 10, 5, domain=domain),
        "other, later": other_meter.sign(s0 + 2 * SLOT, 3, 3, domain=domain),
        "out of order": other_meter.sign(s0 + SLOT, 1, 1, domain=domain),
        "duplicate": first,
        "future-dated": good_meter.sign(head // SLOT * SLOT + 4 * SLOT, 50, 50, domain=domain),
        "registers backwards": good_meter.sign(s0 + 2 * SLOT, 5, 9, domain=domain),
        "off boundary": good_meter.sign(s0 + 2 * SLOT + 1, 30, 30, domain=domain),
        "good 3": good_meter.sign(s0 + 3 * SLOT, 20, 10, domain=domain),
        "minute reading": good_meter.sign(s0 + 3 * SLOT + 60, 21, 10, domain=domain),
        "forged minute": good_meter.sign(s0 + 3 * SLOT + 120, 22, 10, key=Account.create(),
                                         domain=domain),
    }
    expected = {
        "malformed JSON": "not JSON",
        "unsigned": "not signed",
        "wrongly signed": "(BadSignature)",
        "unregistered": "(UnknownMeter)",
        "out of order": "(OutOfOrder)",
        "duplicate": "Duplicate",
        "future-dated": "(FutureDated)",
        "registers backwards": "(RegistersBackwards)",
        "off boundary": "(NotOnSlotBoundary)",
        "forged minute": "(BadSignature)",
    }
    return ReadingCases(entries, expected, good_meter, other_meter, s0)


def unmatched(reasons: Sequence[str], expected: Sequence[str]) -> list[str]:
    """The expected words no reason holds, each reason used once (empty: all matched)."""
    left = list(reasons)
    missing = []
    for words in expected:
        found = next((reason for reason in left if words in reason), None)
        if found is None:
            missing.append(words)
        else:
            left.remove(found)
    return missing


@pytest.fixture
def metered(chain: LocalNetwork, tmp_path: Path) -> MeteredChain:
    """A fresh Settlement (operator admin, bridge recorder) with the ingest account set up
    by the deployment step's own ``ensure_reader``."""
    w3 = connect(chain.rpc_url)
    operator = chain.keys.role("operator").unlock()
    deployment = deploy_settlement(w3, operator, chain.keys.role("bridge").address,
                                   compiled=compile_settlement())
    record = tmp_path / "settlement.json"
    save_deployment(deployment, record)
    deployment = load_deployment(record)
    ensure_reader(w3, operator, deployment, chain.keys.role("ingest").address)
    contract = settlement_contract(w3, deployment)
    return MeteredChain(chain, record, deployment, w3, contract,
                        Domain(deployment.chain_id, deployment.address))


def register_meters(target: MeteredChain, count: int) -> list[Meter]:
    """``count`` meters registered by the operator, each of its own participant."""
    sender = Sender(target.w3, target.net.keys.role("operator").unlock())
    meters, hashes = [], []
    for _ in range(count):
        participant = bytes(16) + uuid.uuid4().bytes
        meter = Meter(meter_id(uuid.uuid4()), Account.create(), participant)
        data = target.contract.encode_abi("registerMeter", args=[
            meter.id, meter.key.address, participant, participant])
        hashes.append(sender.send({"to": target.contract.address, "data": data,
                                   "gas": 300_000}))
        meters.append(meter)
    mined_all(target.w3, [("registerMeter", tx_hash) for tx_hash in hashes])
    return meters


def publish_readings(redis_url: str, payloads: Sequence[str | SignedReading | dict[str, Any]],
                     stream: str = READINGS_STREAM) -> list[str]:
    """Append readings (signed, a JSON object, or raw text) to the stream; entry ids."""
    client = redis.Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for payload in payloads:
            if isinstance(payload, SignedReading):
                payload = reading_json(payload)
            text = payload if isinstance(payload, str) else json.dumps(payload)
            pipe.xadd(stream, {READING_FIELD: text})
        return [entry_id.decode() for entry_id in pipe.execute()]
    finally:
        client.close()


def dead_letters(redis_url: str, stream: str = READINGS_STREAM) -> dict[str, str]:
    """Dead-lettered entry id -> reason."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return {fields["entry_id"]: fields["reason"]
                for _, fields in client.xrange(f"{stream}:dead")}
    finally:
        client.close()


def dead_letter_reasons(redis_url: str, stream: str = READINGS_STREAM) -> list[str]:
    """Every dead letter's reason, in order (those of MQTT messages have no entry id)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return [fields["reason"] for _, fields in client.xrange(f"{stream}:dead")]
    finally:
        client.close()


def pending_count(redis_url: str, group: str, stream: str = READINGS_STREAM) -> int:
    """Entries read by the group but not acknowledged; -1 before the group exists."""
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.xpending(stream, group)["pending"])
    except redis.ResponseError:
        return -1
    finally:
        client.close()


def recorded_on_chain(target: MeteredChain) -> Counter[tuple[bytes, int]]:
    """How often each (meter, time) has a ReadingRecorded event."""
    logs = target.w3.eth.get_logs({"address": target.deployment.address,
                                   "fromBlock": target.deployment.block_number,
                                   "toBlock": "latest", "topics": [READING_RECORDED.topic]})
    return Counter((bytes(log["topics"][1]), int.from_bytes(log["topics"][2], "big"))
                   for log in logs)


def ingest_settings(target: MeteredChain, redis_url: str, **overrides: Any) -> IngestSettings:
    chain = replace(target.net.settings, rpc_url_override=target.net.rpc_url,
                    deployment_file_override=target.record)
    base = IngestSettings(chain=chain, redis_url=redis_url, stream=READINGS_STREAM,
                          metrics_port=free_port(), log_interval=2.0, backoff_max=1.0,
                          recovery_timeout=30.0, gas_budget=1.0, linger=0.1)
    return replace(base, **overrides)


class IngestThread(ServiceThread):
    """The ingest in a thread of the test process."""

    def __init__(self, settings: IngestSettings) -> None:
        super().__init__("ingest", lambda metrics, stop: Ingest(settings, metrics, stop))


class IngestProcess(ServiceProcess):
    """``python -m ingest`` as a real process."""

    module = "ingest"

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": os.environ.get("HOME", "/tmp"), "PYTHONPATH": str(PROJECT_ROOT),
                **self.settings.to_env()}


@dataclass(frozen=True)
class Door:
    """The endpoint under test and the headers of an uploader the operator issued."""

    url: str
    auth: dict[str, str]


def door_env(redis_url: str, tmp_path: Path, **settings: str) -> dict[str, str]:
    """A complete environment for gunicorn, so no developer's .env leaks in."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"), "PILOTCHAIN_HOME": str(tmp_path),
            "KEYS_DIR": str(tmp_path / "keys"), "REDIS_URL": redis_url,
            "INGEST_STREAM": READINGS_STREAM, "INGEST_HTTP_PORT": str(free_port()),
            **settings}


@contextmanager
def serving(env: dict[str, str], tmp_path: Path, uploader: str = "meter-db"
            ) -> Iterator[Door]:
    """gunicorn (2 workers) serving ingest.http:create_app() with ``env``, and a credential
    issued to ``uploader``."""
    settings = HttpSettings.from_env(env)
    credential = Uploaders(settings.uploaders_file).issue(uploader)
    service = IngestHttpService(settings, tmp_path / "pids", env)
    assert service.start()
    try:
        assert service.status() == {"ingest_url": f"{service.url}/api/readings"}
        yield Door(service.url, {"Authorization": f"Bearer {credential}"})
    finally:
        assert service.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MqttService]:
    """A broker of the test's own, laid out as the native stack's under
    ``tmp_path/data`` (so a ``pilotchain`` command with NATIVE_DATA_DIR there reloads it),
    its meters' accounts in ``tmp_path/meters.passwd``."""
    data = tmp_path / "data"
    service = MqttService(private_mqtt(tmp_path / "meters.passwd"), data / "mosquitto",
                          data / "pids")
    assert service.start()
    try:
        yield service
    finally:
        service.stop()


def meter_accounts(broker: MqttService, meters: Sequence[bytes]) -> dict[bytes, str]:
    """Issue each meter its own MQTT account (as registering it does) and have the broker
    take them; the passwords."""
    assert broker.connection.meter_accounts is not None
    accounts = MeterAccounts(broker.connection.meter_accounts)
    passwords = {meter: accounts.issue(meter) for meter in meters}
    assert broker.reload()
    for meter, password in passwords.items():
        wait_for(lambda m=meter, p=password: connect_check(broker.connection, account_name(m),
                                                           p) == 0 or None,
                 timeout=START_SECONDS,
                 what=f"the broker to take meter {account_name(meter)}'s account")
    return passwords


class MeterClients:
    """One connected MQTT client per meter, each with its own account (its client id is
    its account: the broker replaces any other); publishes on the meter's topic, QoS 1."""

    def __init__(self, connection: MqttConnection, passwords: dict[bytes, str]) -> None:
        self.connection = connection
        self.clients: dict[bytes, mqtt.Client] = {}
        self.acknowledged: set[tuple[bytes, int]] = set()
        for meter, password in passwords.items():
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=account_name(meter))
            client.username_pw_set(account_name(meter), password)
            client.reconnect_delay_set(1, 1)
            client.on_publish = (lambda _c, _u, mid, _r, _p, m=meter:
                                 self.acknowledged.add((m, mid)))
            client.connect(connection.host, connection.port, keepalive=10)
            client.loop_start()
            self.clients[meter] = client

    def publish(self, meter: bytes, payload: str | bytes, *, topic_of: bytes | None = None,
                ) -> mqtt.MQTTMessageInfo:
        """Publish as ``meter`` on its own topic (or, to show the broker refuses it, on the
        topic of ``topic_of``)."""
        topic = self.connection.topic_for(account_name(topic_of or meter))
        return self.clients[meter].publish(topic, payload, qos=1)

    def close(self) -> None:
        for client in self.clients.values():
            client.loop_stop()
            client.disconnect()

    def __enter__(self) -> MeterClients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SubscriberThread:
    def __init__(self, settings: MqttSettings) -> None:
        self.metrics = Metrics()
        self.stop = threading.Event()
        self.subscriber = Subscriber(settings, self.metrics, self.stop)
        self.thread = threading.Thread(target=self.subscriber.run, name="mqtt-subscriber")

    def __enter__(self) -> Metrics:
        self.thread.start()
        wait_for(lambda: self.metrics.get("state") == "running" or None,
                 timeout=START_SECONDS, what="the subscriber connected to the broker")
        return self.metrics

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=START_SECONDS)
        assert not self.thread.is_alive()
