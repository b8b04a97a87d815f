"""Simulated meters for a gsy-e run (``pilotchain meters simulate``): the demo of metering and
the ingest's end-to-end test driver.

The run's trades come from a recording of the plug-in's events, or from gsy-e's own export of
the run (``gsy-e run --export-path DIR``), which holds every trade gsy-e booked whether or not
it reached the ledger: meters simulated from the export measure what physically crossed each
house's connection. For each boundary participant (a house: a participant that is also a
market, trading outside it) the simulator generates a throwaway meter key, registers a meter
for it and publishes one signed reading per minute, whose registers make each slot's energy
the traded energy times a deviation factor (1 unless given). Boundary readings carry the
minutes anchor of the minute readings before them, exactly as a meter vendor would.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Protocol

import paho.mqtt.client as mqtt
import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from web3 import Web3

from ingest.readings import reading_json
from pilotchain.chain import Sender, connect, wait_for, wait_for_receipt
from pilotchain.config import ChainSettings, MqttConnection
from pilotchain.contract import load_deployment
from pilotchain.errors import ChainError, PilotChainError
from pilotchain.gsy_export import read_export
from pilotchain.keys import KeyStore
from pilotchain.meter_accounts import MeterAccounts, account_name
from pilotchain.metering import (
    DEFAULT_SLOT_SECONDS,
    Domain,
    MeterReading,
    SignedReading,
    boundary_energy,
    matching_registers,
    meter_id,
    minutes_anchor,
    sign_reading,
)
from pilotchain.settlement import Settlement
from pilotchain.trades import TradeRecord, read_recording, uuid_to_bytes32

HTTP_CHUNK = 1000


class SimulationError(PilotChainError):
    """The simulation cannot run; the message says why."""


@dataclass(frozen=True)
class SimulatedMeter:
    """A throwaway meter of one participant, and the factor its energy deviates by."""

    participant: uuid.UUID
    meter: bytes
    key: LocalAccount
    factor: float


@dataclass(frozen=True)
class Simulation:
    """What a run did."""

    meters: list[SimulatedMeter]
    readings: int
    boundary_readings: int
    slots: list[int]
    registers: dict[uuid.UUID, dict[int, tuple[int, int]]]
    keys_file: Path


def boundary_participants(records: Sequence[TradeRecord]) -> list[uuid.UUID]:
    """Participants that are also markets (gsy-e houses) and trade outside their own."""
    markets = {record.market for record in records}
    crossing = {party for record in records for party in (record.seller, record.buyer)
                if party in markets and record.market != party}
    return sorted(crossing)


def parse_deviations(values: Sequence[str]) -> dict[uuid.UUID, float]:
    """``PARTICIPANT=FACTOR`` arguments (participant as a uuid)."""
    factors = {}
    for value in values:
        name, _, factor = value.partition("=")
        try:
            participant, number = uuid.UUID(name.strip()), float(factor)
        except ValueError:
            raise SimulationError(f"--deviation {value!r} must be PARTICIPANT=FACTOR with the "
                                  "participant's uuid and a number, e.g. "
                                  f"{uuid.UUID(int=1)}=1.25.") from None
        if number < 0:
            raise SimulationError(f"--deviation {value!r}: the factor cannot be negative.")
        factors[participant] = number
    return factors


def meter_readings(meter: bytes, key: LocalAccount, boundaries: Mapping[int, tuple[int, int]],
                   domain: Domain, slot_seconds: int = DEFAULT_SLOT_SECONDS
                   ) -> list[SignedReading]:
    """Every minute's signed reading from the first boundary to the last, in time order.

    Registers rise evenly within a slot (rounded down to whole Wh); each boundary reading
    anchors the minute readings since the previous boundary.
    """
    times = sorted(boundaries)
    if not times:
        return []
    readings = [sign_reading(MeterReading(meter, times[0], *boundaries[times[0]]), key, domain)]
    for start, end in pairwise(times):
        (import0, export0), (import1, export1) = boundaries[start], boundaries[end]
        span = end - start
        minutes = [MeterReading(meter, start + offset,
                                import0 + (import1 - import0) * offset // span,
                                export0 + (export1 - export0) * offset // span)
                   for offset in range(60, span, 60)]
        readings += [sign_reading(minute, key, domain) for minute in minutes]
        boundary = MeterReading(meter, end, import1, export1, minutes_anchor(minutes, domain))
        readings.append(sign_reading(boundary, key, domain))
    return readings


class Publisher(Protocol):
    """Where the simulated meters' readings go (MQTT or the HTTP endpoint)."""

    def admit(self, meters: Sequence[SimulatedMeter]) -> dict[bytes, str]:
        """Give the registered meters what they need to publish; their MQTT passwords."""
        ...

    def __call__(self, batch: Sequence[tuple[SimulatedMeter, SignedReading]]) -> None: ...


def simulate(source: Path, settings: ChainSettings, *, rpc_url: str,
             deviations: Mapping[uuid.UUID, float], publish: Publisher,
             realtime: bool = False, keys_file: Path | None = None,
             progress: Callable[[str], None] = lambda _: None) -> Simulation:
    """Register a meter for each boundary participant and publish its readings."""
    records = source_trades(source)
    participants = boundary_participants(records)
    if not participants:
        raise SimulationError(f"The run in {source} has no participant trading across "
                              "its own area (no gsy-e house with outside trades).")
    unknown = sorted(str(p) for p in set(deviations) - set(participants))
    if unknown:
        raise SimulationError(f"--deviation names {', '.join(unknown)}, not a boundary "
                              f"participant of {source.name}; they are: "
                              f"{', '.join(str(p) for p in participants)}.")
    w3 = connect(rpc_url)
    deployment = load_deployment(settings.deployment_file)
    contract = Settlement.at(w3, rpc_url, deployment)
    slot_seconds = contract.read(contract.abi.slot_seconds())
    homes = {participant: participant for participant in participants}
    slots = sorted({record.time_slot for record in records})
    registers = matching_registers(boundary_energy(records, homes), slots, dict(deviations),
                                   slot_seconds)
    meters = [SimulatedMeter(p, meter_id(uuid.uuid4()), Account.create(),
                             deviations.get(p, 1.0)) for p in participants]
    keys_file = keys_file or settings.data_dir / "meters" / f"simulated-{int(time.time())}.json"
    save_throwaway_keys(meters, keys_file, deployment.address)
    progress(f"throwaway meter keys in {keys_file}")
    register_meters(w3, rpc_url, contract, KeyStore(settings.keys_dir), meters)
    progress(f"registered {len(meters)} meters")
    passwords = publish.admit(meters)
    if passwords:
        save_throwaway_keys(meters, keys_file, deployment.address, passwords)
        progress(f"gave each meter its own MQTT account (passwords in {keys_file})")
    domain = Domain(deployment.chain_id, deployment.address)
    per_meter = [[(m, r) for r in meter_readings(m.meter, m.key, registers[m.participant],
                                                  domain, slot_seconds)] for m in meters]
    ordered = sorted((pair for readings in per_meter for pair in readings),
                     key=lambda pair: pair[1].reading.time)
    for batch in _paced(ordered, realtime):
        publish(batch)
    progress(f"published {len(ordered)} readings")
    boundary = sum(1 for _, r in ordered if r.reading.time % slot_seconds == 0)
    return Simulation(meters, len(ordered), boundary, slots, registers, keys_file)


def source_trades(source: Path) -> list[TradeRecord]:
    """The trades of a recording (JSON lines), or of a gsy-e export (a directory)."""
    if source.is_dir():
        return read_export(source).records()
    try:
        return read_recording(source)
    except OSError as error:
        raise SimulationError(f"Cannot read the recording {source}: {error.strerror}.") from None


def _paced(ordered: Sequence[tuple[SimulatedMeter, SignedReading]], realtime: bool
           ) -> Iterator[list[tuple[SimulatedMeter, SignedReading]]]:
    """All at once, or each minute's readings when its time has come relative to the first."""
    if not realtime or not ordered:
        yield list(ordered)
        return
    first, began = ordered[0][1].reading.time, time.monotonic()
    index = 0
    while index < len(ordered):
        due = ordered[index][1].reading.time
        group = []
        while index < len(ordered) and ordered[index][1].reading.time == due:
            group.append(ordered[index])
            index += 1
        delay = began + (due - first) - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the publication, as a meter's clock does
        yield group


def save_throwaway_keys(meters: Sequence[SimulatedMeter], path: Path, contract: str,
                        mqtt_passwords: Mapping[bytes, str] | None = None) -> None:
    """Write the simulated meters' keys and MQTT passwords (private file): marked throwaway,
    never for a meter."""
    passwords = mqtt_passwords or {}
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"throwaway": True,
            "warning": "Keys of simulated meters made by `pilotchain meters simulate`; never "
                       "use them for a real meter.",
            "settlement": contract,
            "meters": [{"participant": str(m.participant), "meter": "0x" + m.meter.hex(),
                        "address": m.key.address, "key": m.key.key.hex(), "factor": m.factor,
                        **({"mqtt_account": account_name(m.meter),
                            "mqtt_password": passwords[m.meter]} if m.meter in passwords
                           else {})}
                       for m in meters]}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(body, indent=2) + "\n")


def register_meters(w3: Web3, rpc_url: str, contract: Settlement, keys: KeyStore,
                    meters: Sequence[SimulatedMeter]) -> None:
    """Register each meter for its participant (its own area as home), as the operator."""
    for m in meters:
        existing = contract.read(contract.abi.meters_of(uuid_to_bytes32(m.participant)))
        if existing:
            raise SimulationError(
                f"Participant {m.participant} already has meter 0x{bytes(existing[-1]).hex()} "
                "in this Settlement; the simulator only meters unmetered participants "
                "(deploy a fresh contract with `pilotchain deploy --force` to start over).")
    sender = Sender(w3, keys.role("operator").unlock(), url=rpc_url)
    hashes = []
    try:
        for m in meters:
            pid = uuid_to_bytes32(m.participant)
            data = contract.abi.register_meter(m.meter, m.key.address, pid, pid)
            hashes.append(sender.send({"to": contract.address, "data": HexBytes(data),
                                       "gas": 300_000}))
        for tx_hash in hashes:
            if wait_for_receipt(w3, tx_hash)["status"] != 1:
                raise SimulationError(f"Registering a meter failed: transaction "
                                      f"{tx_hash.to_0x_hex()} reverted.")
    except ChainError as error:
        raise SimulationError(f"Registering the simulated meters failed: {error}") from None


class MqttPublisher:
    """Publishes readings as meters do: each meter with its own account (issued by
    :meth:`admit`), on its own topic, QoS 1; a batch returns once the broker has acknowledged
    every message of it."""

    def __init__(self, connection: MqttConnection, reload: Callable[[], bool],
                 timeout: float = 300.0) -> None:
        self.connection = connection
        self.reload = reload
        self.timeout = timeout
        self.clients: dict[bytes, mqtt.Client] = {}
        self.acknowledged: set[tuple[bytes, int]] = set()
        self._lock = threading.Lock()

    def admit(self, meters: Sequence[SimulatedMeter]) -> dict[bytes, str]:
        """Issue each meter its own account, have the broker take them, and connect each."""
        if self.connection.meter_accounts is None:
            raise SimulationError("No file for the meters' MQTT accounts (MQTT_METER_ACCOUNTS_"
                                  "FILE); the simulator cannot give its meters accounts.")
        accounts = MeterAccounts(self.connection.meter_accounts)
        passwords = {m.meter: accounts.issue(m.meter) for m in meters}
        # Natively the runner signals the broker; in Compose the broker's start script
        # notices the file changed. Either way: wait until each account gets in.
        self.reload()
        for meter, password in passwords.items():
            self.clients[meter] = self._connect(meter, password)
        return passwords

    def _connect(self, meter: bytes, password: str) -> mqtt.Client:
        """The meter's client, connected with its account (retried while the broker has
        not taken the new account yet)."""
        deadline = time.monotonic() + 60
        while True:
            client, reason = self._attempt(meter, password)
            if not reason.is_failure:
                return client
            client.loop_stop()
            client.disconnect()
            if time.monotonic() > deadline:
                raise SimulationError(f"The broker at {self.connection.url} refuses meter "
                                      f"{account_name(meter)}'s new account ({reason}); does "
                                      f"it read {self.connection.meter_accounts}?")
            time.sleep(1)  # the broker takes new accounts when told to (or notices, in Compose)

    def _attempt(self, meter: bytes, password: str) -> tuple[mqtt.Client, ReasonCode]:
        name = account_name(meter)
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)
        client.username_pw_set(name, password)
        client.max_queued_messages_set(0)
        answers: list[ReasonCode] = []
        client.on_connect = lambda _c, _u, _f, reason, _p: answers.append(reason)
        client.on_publish = lambda _c, _u, mid, _r, _p: self._acked(meter, mid)
        try:
            client.connect(self.connection.host, self.connection.port, keepalive=30)
        except OSError as error:
            raise SimulationError(f"Cannot reach the MQTT broker at {self.connection.url} "
                                  f"({error}); is the stack up?") from None
        client.loop_start()
        try:
            wait_for(lambda: answers or None, timeout=30,
                     what=f"the broker at {self.connection.url} to answer meter {name}")
        except ChainError as error:
            client.loop_stop()
            raise SimulationError(str(error)) from None
        return client, answers[0]

    def _acked(self, meter: bytes, mid: int) -> None:
        with self._lock:
            self.acknowledged.add((meter, mid))

    def __call__(self, batch: Sequence[tuple[SimulatedMeter, SignedReading]]) -> None:
        sent = []
        for meter, signed in batch:
            topic = self.connection.topic_for(account_name(meter.meter))
            client = self.clients[meter.meter]
            sent.append((meter.meter, client.publish(topic, json.dumps(reading_json(signed)),
                                                     qos=1).mid))

        def all_acknowledged() -> bool | None:
            with self._lock:
                return self.acknowledged.issuperset(sent) or None

        try:
            wait_for(all_acknowledged, timeout=self.timeout,
                     what=f"the broker at {self.connection.url} to take the readings")
        except ChainError as error:
            raise SimulationError(str(error)) from None

    def close(self) -> None:
        for client in self.clients.values():
            client.loop_stop()
            client.disconnect()


class HttpPublisher:
    """Uploads readings to the ingest's ``POST /api/readings`` in chunks."""

    def __init__(self, url: str, credential: str | None) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {credential}"} if credential else {}

    def admit(self, meters: Sequence[SimulatedMeter]) -> dict[bytes, str]:
        """Nothing to do: the upload's credential stands for every meter."""
        return {}

    def __call__(self, batch: Sequence[tuple[SimulatedMeter, SignedReading]]) -> None:
        for start in range(0, len(batch), HTTP_CHUNK):
            chunk = [reading_json(signed) for _, signed in batch[start:start + HTTP_CHUNK]]
            try:
                answer = requests.post(self.url, json=chunk, headers=self.headers, timeout=60)
            except requests.RequestException as error:
                raise SimulationError(f"Cannot reach the ingest at {self.url} ({error}); is "
                                      "the stack up?") from None
            if answer.status_code != 202 or answer.json().get("refused"):
                raise SimulationError(f"The ingest at {self.url} answered "
                                      f"{answer.status_code}: {answer.text[:300]}")
