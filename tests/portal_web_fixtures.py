"""Fixtures of the portal web app's tests: one Settlement on the session's chain with a real
gsy-e recording replayed, two participants' wallets registered, one metered participant with
closed slots and a closed billing period (``portal_chain``, once per module), all indexed into
a SQLite file or, where a module parametrises ``portal_engine``, a PostgreSQL database too;
the portal under real gunicorn on each (``portal_world``); and a client that signs in the way
a wallet does (EIP-4361, personal_sign with a real key).

Loaded as a pytest plug-in by conftest.py; test modules import only helpers from here.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import secrets
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from bridge_fixtures import (
    NOTICE_SECONDS,
    START_SECONDS,
    BridgeProcess,
    Deployed,
    bridge_settings,
    publish_lines,
    send,
    send_calls,
)
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from ingest_fixtures import IngestProcess, publish_readings
from portal_fixtures import record_trades
from recordings import DATA

from bridge.config import StreamSettings
from ingest.config import IngestSettings
from pilotchain.chain import Sender, connect, wait_for
from pilotchain.contract import (
    compile_settlement,
    deploy_settlement,
    load_deployment,
    save_deployment,
    settlement_contract,
)
from pilotchain.deployment import ensure_reader
from pilotchain.metering import WH, Domain, MeterReading, meter_id, sign_reading
from pilotchain.trades import TradeRecord, read_recording, uuid_to_bytes32
from portal.config import PortalSettings
from portal.indexer import Indexer
from portal.web.config import WebSettings
from runner.localnet import LocalNetwork
from runner.portal import PortalWebService
from runner.ports import free_port
from runner.postgres import PostgresServer
from runner.redis import RedisService

__all__ = [
    "CONTACT",
    "EXPLORER",
    "RATES",
    "RECORDING",
    "REGISTERS",
    "Operations",
    "PortalChain",
    "PortalClient",
    "PortalServices",
    "PortalWorld",
    "as_figures",
    "expected_community",
    "expected_month",
    "gsy_names",
    "portal_chain",
    "portal_engine",
    "portal_env",
    "portal_services",
    "portal_world",
    "sign",
]

EXPLORER = "http://explorer.test"
CONTACT = "the grid operator (ops@pilot.test)"
RECORDING = DATA / "default_2a_two_sided.jsonl"
SLOT = 900
CT = 10**18
# The metered participant's rates (ct/kWh: shortfall, grid supply, feed-in) and registers
# (import, export Wh at each boundary of its three slots): exported 7 of 10 sold, imported
# 26 of 20 bought, exported exactly the 5 sold.
RATES = (40 * CT, 30 * CT, 0)
REGISTERS = [(1000, 500), (1000, 507), (1026, 507), (1026, 512)]


@dataclass(frozen=True)
class Operations:
    """What the operator's view watches: the session's Redis with this module's own trade
    and reading streams, and the ports where the bridge's, the ingest's, its MQTT
    subscriber's and the slot closer's ``/health`` are expected (see ``portal_services``; the
    subscriber and the closer never run)."""

    redis_url: str
    trades: str
    readings: str
    ports: dict[str, int]

    def health_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}/health"

    def env(self) -> dict[str, str]:
        """The portal's settings naming them."""
        return {"REDIS_URL": self.redis_url, "BRIDGE_STREAM": self.trades,
                "INGEST_STREAM": self.readings, "PORTAL_HEALTH_TIMEOUT": "1",
                **{f"PORTAL_{name.upper()}_HEALTH_URL": self.health_url(name)
                   for name in self.ports}}


@dataclass
class PortalWorld:
    """What the portal's tests stand on."""

    target: Deployed
    records: list[TradeRecord]
    metered: list[TradeRecord]
    alice: LocalAccount  # participant A's wallet (A is metered)
    bob: LocalAccount  # participant B's wallet
    operator: LocalAccount
    a: str
    b: str
    database_url: str
    service: PortalWebService
    ops: Operations
    carol: LocalAccount  # participant C's wallet (C trades in the open period too)
    c: str
    others: list[TradeRecord]  # C's trades: one in period 1, two in the open period

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def w3(self) -> Any:
        return connect(self.target.net.rpc_url)

    def contract(self) -> Any:
        return settlement_contract(self.w3, self.target.deployment)

    @property
    def domain(self) -> str:
        """The domain sign-in messages name: this portal's, localhost and its port."""
        return self.url.removeprefix("http://")

    def client(self) -> PortalClient:
        return PortalClient(self.url)


def sign(account: LocalAccount, text: str) -> str:
    """personal_sign of ``text``, as a wallet answers it."""
    signed = Account.sign_message(encode_defunct(text=text), account.key)
    return "0x" + bytes(signed.signature).hex()


def client_address() -> str:
    """A network address of its own for one client (the portal trusts one proxy's
    X-Forwarded-For), so per-client limits count each test's clients apart."""
    return str(ipaddress.IPv4Address(0x0A000000 + secrets.randbelow(2**24)))


@dataclass
class PortalClient:
    """A browser-like client: keeps the session cookie (sent over plain HTTP on loopback
    although it is marked Secure) and the CSRF token, and signs in as a wallet does; it
    comes from an address of its own (``address``, as a proxy's X-Forwarded-For)."""

    url: str
    cookies: dict[str, str] = field(default_factory=dict)
    csrf: str = ""
    last: requests.Response | None = None
    address: str = field(default_factory=client_address)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        headers.setdefault("X-Forwarded-For", self.address)
        if method == "POST" and self.csrf:
            headers.setdefault("X-CSRFToken", self.csrf)
        response = requests.request(method, self.url + path, cookies=self.cookies,
                                    headers=headers, timeout=60, **kwargs)
        self.cookies.update(response.cookies.get_dict())
        self.last = response
        return response

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def me(self) -> dict[str, Any]:
        body: dict[str, Any] = self.get("/api/me").json()
        self.csrf = body["csrf_token"]
        return body

    def challenge(self, account: LocalAccount) -> str:
        self.me()
        reply = self.post("/api/auth/challenge", json={"address": account.address})
        assert reply.status_code == 200, reply.text
        message: str = reply.json()["message"]
        return message

    def verify(self, message: str, signature: str) -> requests.Response:
        reply = self.post("/api/auth/verify", json={"message": message,
                                                    "signature": signature})
        if reply.status_code == 200:
            self.csrf = reply.json()["csrf_token"]
        return reply

    def sign_in(self, account: LocalAccount) -> requests.Response:
        message = self.challenge(account)
        return self.verify(message, sign(account, message))


def two_busiest(records: list[TradeRecord]) -> tuple[uuid.UUID, uuid.UUID]:
    counts = Counter(p for r in records for p in (r.seller, r.buyer))
    (first, _), (second, _) = counts.most_common(2)
    return first, second


def meter_participant(target: Deployed, operator: LocalAccount, a: uuid.UUID
                      ) -> list[TradeRecord]:
    """A meter for ``a``, three closed slots each with a boundary trade and readings (one
    short, one in excess, one exact), and period 1 closed after them (ending at the start of
    the last)."""
    w3 = connect(target.net.rpc_url)
    contract = settlement_contract(w3, target.deployment)
    admin = Sender(w3, operator)
    recorder = Sender(w3, target.net.keys.role("bridge").unlock())
    meter_key = Account.create()
    meter = meter_id(uuid.uuid4())
    pid = uuid_to_bytes32(a)
    send_calls(w3, admin, contract,
               ("registerMeter", meter, meter_key.address, pid, pid),
               ("setCloseDelay", 0),
               ("setRates", 0, *RATES),
               ("grantRole", contract.functions.READER_ROLE().call(), operator.address))
    base = w3.eth.get_block("latest")["timestamp"] // SLOT * SLOT
    slots = [base - 3 * SLOT, base - 2 * SLOT, base - SLOT]
    market, other = uuid.uuid4(), uuid.uuid4()
    trades = [TradeRecord(uuid.uuid4(), market, slots[0], a, other, a, other, 10 * WH, CT, 0),
              TradeRecord(uuid.uuid4(), market, slots[1], other, a, other, a, 20 * WH,
                          2 * CT, 0),
              TradeRecord(uuid.uuid4(), market, slots[2], a, other, a, other, 5 * WH, CT, 0)]
    # After the meter (the contract counts a trade across it only once it is registered),
    # before the slots' closing, which the operator sends only once this is mined.
    send(w3, recorder, contract, "recordTrades", [t.as_contract_tuple() for t in trades])
    domain = Domain(w3.eth.chain_id, contract.address)
    readings = [sign_reading(MeterReading(meter, slots[0] + i * SLOT, imp, exp), meter_key,
                             domain) for i, (imp, exp) in enumerate(REGISTERS)]
    send_calls(w3, admin, contract,
               ("submitReadings", [r.as_contract_tuple() for r in readings]),
               ("closeSlots", [pid] * 3, slots),
               # Ending a slot before now, so that the operator can close the next period
               # at ``base``.
               ("closePeriod", base - SLOT))
    return trades


@dataclass(frozen=True)
class PortalChain:
    """The chain half of the world: shared by every index database a module tries."""

    target: Deployed
    records: list[TradeRecord]
    metered: list[TradeRecord]
    alice: LocalAccount
    bob: LocalAccount
    operator: LocalAccount
    a: uuid.UUID
    b: uuid.UUID
    carol: LocalAccount
    c: uuid.UUID
    others: list[TradeRecord]


@pytest.fixture(scope="module")
def portal_chain(chain: LocalNetwork, tmp_path_factory: pytest.TempPathFactory) -> PortalChain:
    """A Settlement with the recording's trades, a metered participant and two registered
    wallets, on the session's chain; made once per module, whatever the index."""
    home = tmp_path_factory.mktemp("portal-chain")
    w3 = connect(chain.rpc_url)
    operator = chain.keys.role("operator").unlock()
    deployment = deploy_settlement(w3, operator, chain.keys.role("bridge").address,
                                   compiled=compile_settlement())
    record = home / "settlement.json"
    save_deployment(deployment, record)
    target = Deployed(chain, record, load_deployment(record))
    records = list(read_recording(RECORDING))
    record_trades(target, records)
    a, b = two_busiest(records)
    # C trades with D (neither in the recording nor metered): once in period 1 and twice
    # in the open one, so the operator's overview has an open-period net to show.
    c, d, market = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    slot = w3.eth.get_block("latest")["timestamp"] // SLOT * SLOT
    others = [TradeRecord(uuid.uuid4(), market, slot, c, d, c, d, 4 * WH, 3 * CT, 0),
              TradeRecord(uuid.uuid4(), market, slot, c, d, c, d, 7 * WH, 5 * CT + 1, 0),
              TradeRecord(uuid.uuid4(), market, slot, d, c, d, c, 3 * WH, 2 * CT, 0)]
    record_trades(target, others[:1])
    metered = meter_participant(target, operator, a)
    record_trades(target, others[1:])
    alice, bob, carol = Account.create(), Account.create(), Account.create()
    admin, contract = Sender(w3, operator), settlement_contract(w3, target.deployment)
    send_calls(w3, admin, contract,
               ("registerParticipant", uuid_to_bytes32(a), alice.address),
               ("registerParticipant", uuid_to_bytes32(b), bob.address),
               ("registerParticipant", uuid_to_bytes32(c), carol.address))
    return PortalChain(target, records, metered, alice, bob, operator, a, b, carol, c, others)


@pytest.fixture(scope="module")
def portal_engine() -> str:
    """The index database under the portal: SQLite, unless a module parametrises this
    (``@pytest.fixture(scope="module", params=ENGINES) def portal_engine``)."""
    return "sqlite"


@pytest.fixture(scope="module")
def portal_world(portal_chain: PortalChain, portal_engine: str, redis_server: RedisService,
                 tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
                 ) -> Iterator[PortalWorld]:
    """The world above, indexed into a database of ``portal_engine`` (a SQLite file, or a
    fresh database on the session's PostgreSQL server), with the portal (2 gunicorn workers)
    serving it."""
    world, net = portal_chain, portal_chain.target.net
    home = tmp_path_factory.mktemp(f"portal-{portal_engine}")
    # Streams of this world's own: the bridge binds a stream to one contract.
    prefix = f"portal-{uuid.uuid4().hex[:8]}"
    ops = Operations(redis_server.url, f"{prefix}:trades", f"{prefix}:readings",
                     {name: free_port() for name in ("bridge", "ingest", "ingest_mqtt",
                                                     "closer")})
    if portal_engine == "sqlite":
        database_url = f"sqlite:///{home / 'portal.sqlite3'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        database_url = server.create_database(f"portal_web_{uuid.uuid4().hex[:12]}")
    record = world.target.record
    chain_settings = replace(net.settings, rpc_url_override=net.rpc_url,
                             deployment_file_override=record)
    indexer = Indexer(PortalSettings(chain=chain_settings, database_url_override=database_url,
                                     confirmations=0))
    try:
        indexer.catch_up()
    finally:
        indexer.close()

    # The recording's events in the world's trade stream, as gsy-e's plug-in writes them:
    # where the portal reads gsy-e's names (nothing runs the bridge on them until
    # ``portal_services``, which finds every trade recorded already).
    publish_lines(ops.redis_url, RECORDING.read_text().splitlines(), ops.trades)
    env = portal_env(net, record, database_url, home, **ops.env())
    service = PortalWebService(WebSettings.from_env(env), home / "pids", env)
    try:
        assert service.start(net)
        yield PortalWorld(world.target, world.records, world.metered, world.alice, world.bob,
                          world.operator, str(world.a), str(world.b), database_url, service,
                          ops, world.carol, str(world.c), world.others)
    finally:
        service.stop()


def portal_env(chain: LocalNetwork, record: Path, database_url: str, home: Path,
               **overrides: str) -> dict[str, str]:
    """A complete environment for the portal, so no developer's .env leaks in."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PILOTCHAIN_HOME": str(home),
        "RPC_URL": chain.rpc_url,
        "CHAIN_ID": str(chain.settings.chain_id),
        "NETWORK_NAME": chain.settings.network_name,
        "EXPLORER_URL": EXPLORER,
        "DEPLOYMENT_FILE": str(record),
        "PORTAL_DATABASE_URL": database_url,
        "PORTAL_PORT": str(free_port()),
        "PORTAL_METRICS_PORT": str(free_port()),
        "PORTAL_WORKERS": "2",
        "PORTAL_SECRET_FILE": str(home / "portal-secret"),
        "PORTAL_OPERATOR_CONTACT": CONTACT,
        # Clients name their address in X-Forwarded-For (PortalClient), as behind a proxy.
        "PORTAL_TRUSTED_PROXIES": "1",
    }
    env.update(overrides)
    return env


@dataclass(frozen=True)
class PortalServices:
    """The bridge and the ingest running for the world, each having dead-lettered one real
    malformed entry: the entry ids (in their streams) and the reasons they gave."""

    bad_trade: str
    bad_reading: str
    reasons: dict[str, str]


def dead_letter_reason(redis_url: str, stream: str, entry_id: str) -> str | None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        found = [fields["reason"] for _, fields in client.xrange(f"{stream}:dead")
                 if fields.get("entry_id") == entry_id]
    finally:
        client.close()
    return found[0] if found else None


@pytest.fixture(scope="module")
def portal_services(portal_world: PortalWorld, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[PortalServices]:
    """``python -m bridge`` and ``python -m ingest`` on the world's contract and streams,
    their metrics where the portal looks; a malformed trade event and a malformed reading
    put through them, so each dead-letters one entry its own way. The closer stays down."""
    world, ops = portal_world, portal_world.ops
    logs = tmp_path_factory.mktemp("portal-services")
    w3 = connect(world.target.net.rpc_url)
    ensure_reader(w3, world.operator, world.target.deployment,
                  world.target.net.keys.role("ingest").address)
    chain = replace(world.target.net.settings, rpc_url_override=world.target.net.rpc_url,
                    deployment_file_override=world.target.record)
    bridge = BridgeProcess(replace(bridge_settings(world.target, ops.redis_url),
                                   streams=StreamSettings(ops.redis_url, ops.trades),
                                   dead_letter_stream="",  # named after the stream again
                                   metrics_port=ops.ports["bridge"]), logs / "bridge.log")
    ingest = IngestProcess(IngestSettings(chain=chain, redis_url=ops.redis_url,
                                          stream=ops.readings, metrics_port=ops.ports["ingest"],
                                          backoff_max=1.0, recovery_timeout=30.0),
                           logs / "ingest.log")
    try:
        for process in (bridge, ingest):
            process.start()
        for process in (bridge, ingest):
            wait_for(lambda p=process: (p.metrics() or {}).get("state") == "running",
                     timeout=START_SECONDS,
                     what=f"{process.module} to run (its log: {process.log_file})")
        [bad_trade] = publish_lines(ops.redis_url, ["this is not a trade event"], ops.trades)
        [bad_reading] = publish_readings(ops.redis_url, [{"meter": "no such meter"}],
                                         ops.readings)
        reasons = {}
        for service, stream, entry in (("bridge", ops.trades, bad_trade),
                                       ("ingest", ops.readings, bad_reading)):
            reasons[service] = wait_for(
                lambda s=stream, e=entry: dead_letter_reason(ops.redis_url, s, e),
                timeout=NOTICE_SECONDS,
                what=f"the {service} to dead-letter entry {entry} of {stream}")
        yield PortalServices(bad_trade, bad_reading, reasons)
    finally:
        for process in (bridge, ingest):
            process.stop()


# --- what the portal should say, computed here from the recording and the readings ------------


def gsy_names() -> dict[str, str]:
    """Every uuid's name as gsy-e's events in the recording give it (parties and origins)."""
    found: dict[str, str] = {}
    for line in RECORDING.read_text().splitlines():
        trade = json.loads(line)["trade"]
        for side in ("seller", "buyer"):
            party = trade[side]
            found[party["uuid"]] = party["name"]
            found[party["origin_uuid"] or party["uuid"]] = party["origin"]
    return found


def as_figures(month: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """``month``'s figures named by ``keys`` as integers (the API sends big ones as text),
    None left as it is."""
    return {k: None if month[k] is None else int(month[k]) for k in keys}


def metered_slots(world: PortalWorld, participant: str
                  ) -> list[tuple[int, int, int, int, int]]:
    """(slot, imported, exported, sold, bought) of each slot ``participant``'s meter was
    balanced in, from the registers the world's meter read and its metered trades (only
    participant A has a meter)."""
    if participant != world.a:
        return []
    wh = 10**15
    found = []
    for index, trade in enumerate(world.metered):
        (imp0, exp0), (imp1, exp1) = REGISTERS[index], REGISTERS[index + 1]
        found.append((trade.time_slot, (imp1 - imp0) * wh, (exp1 - exp0) * wh,
                      trade.energy if str(trade.seller) == participant else 0,
                      trade.energy if str(trade.buyer) == participant else 0))
    return found


def expected_community(world: PortalWorld) -> list[dict[str, int]]:
    """The operator's community energy per slot, added up over the metered participants."""
    rows: dict[int, dict[str, int]] = {}
    for participant in (world.a, world.b):
        for slot, imported, exported, sold, bought in metered_slots(world, participant):
            row = rows.setdefault(slot, dict.fromkeys(
                ("participants", "imported", "exported", "bought", "from_grid", "to_grid"), 0))
            row["participants"] += 1
            row["imported"] += imported
            row["exported"] += exported
            row["bought"] += bought
            row["from_grid"] += max(0, imported - bought)
            row["to_grid"] += max(0, exported - sold)
    return [{"slot": slot, **rows[slot]} for slot in sorted(rows)]


def expected_month(world: PortalWorld, participant: str) -> dict[str, Any]:
    """Billing period 1 (everything the world recorded: it was closed after the last trade
    and the metered slots) of ``participant``, from the recording, the metered trades, the
    registers and the rates alone: energies in kWh * 10**18, money in ct * 10**18."""
    shortfall_rate, grid_rate, feed_in_rate = RATES
    mine = [r for r in world.records + world.metered
            if participant in (str(r.seller), str(r.buyer))]
    bought = sum(r.energy for r in mine if str(r.buyer) == participant)
    paid = sum(r.price for r in mine if str(r.buyer) == participant)
    sold = sum(r.energy for r in mine if str(r.seller) == participant)
    received = sum(r.price for r in mine if str(r.seller) == participant)
    charges = credits = from_grid = to_grid = 0
    for _, imported, exported, slot_sold, slot_bought in metered_slots(world, participant):
        charges += max(0, slot_sold - exported) * shortfall_rate // CT
        charges += max(0, imported - slot_bought) * grid_rate // CT
        credits += max(0, exported - slot_sold) * feed_in_rate // CT
        from_grid += max(0, imported - slot_bought)
        to_grid += max(0, exported - slot_sold)
    grid_value, feed_in_value = bought * grid_rate // CT, sold * feed_in_rate // CT
    # The community's share of what was drawn, in basis points rounded half up.
    drawn = bought + from_grid
    share = None if drawn == 0 else math.floor(Fraction(bought * 10_000, drawn) + Fraction(1, 2))
    return {"trades": len(mine), "bought": bought, "paid": paid, "sold": sold,
            "received": received, "from_grid": from_grid, "to_grid": to_grid,
            "self_sufficiency": share,
            "grid_value": grid_value, "feed_in_value": feed_in_value,
            "savings": grid_value - paid, "earned": received - feed_in_value,
            "balancing_charges": charges, "balancing_credits": credits,
            "net": received + credits - paid - charges}
