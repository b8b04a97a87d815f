"""docker-compose.yml on a real Docker engine, as a user runs it from a fresh clone.

One stack for the module (one bring-up is minutes), the tests in order: (a) ``up -d`` of the
chain, the bridge, the faucet, the meter ingest (mosquitto, its subscriber, the HTTP endpoint,
the writer) and the participant portal (its indexer, its web app with the SQLite index on its
volume) on a clone owned by a uid that is neither the tester's nor 1000, every service healthy,
keys owned by that uid, three signers sealing in turn, the Settlement deployed once, the faucet
paying through its published port; (b) a recording replayed with the documented ``docker
compose exec bridge pilotchain replay FILE`` settles exactly once, field by field; the portal's
indexer has them all (the operator signs in with a real signature at http://localhost:<port>
and reads them through the API, each linked to the explorer) and the portal serves uPlot from
the image; (c) a meter the operator registers has one reading published over MQTT (its own
account, issued with `docker compose run --rm init pilotchain meters mqtt-password`, published
port) and one uploaded over HTTP (an uploader credential issued the same way; none: 401), each
on chain exactly once, and the broker refuses an anonymous client, a wrong password and the
retired shared account. Then what the stack survives: (d) ``docker kill`` of one validator: the
other two keep sealing, and started again it catches up with the RPC node; (e) a validator cut
off its network for 60 s with ``docker network disconnect`` and reconnected: every node ends on
one chain, the reconnected one has peers and seals again; (f) the bridge container SIGKILLed
while it settles a replay of 2,000 trades and started again: every trade on chain exactly once;
(f2) the engine's plan of a plain ``up -d`` (``create --dry-run``), twice, creates no gsy-e
(only ``--profile simulation`` would) and no trade is added. Last (g) ``stop`` + ``up -d``
keeps the chain, the contract and the portal's index (every trade on chain, none twice) and
nothing rewinds; ``down`` keeping the volumes, then keys and genesis made anew
(``pilotchain init --force``): ``up`` refuses at ``chain-check`` with one sentence and no node
starts on the old chain's data; and ``down -v`` leaves nothing. Each node is read through its
own IPC socket (``docker compose exec -T <node> geth attach``), the RPC node also through its
published port.
Blockscout, its node and gsy-e are left out: their images cannot be built without their
registries. All traffic goes to the ports published on 127.0.0.1.

Images are local stand-ins (scripts/lib/build-local-images.sh) given through the compose file's
image variables; the first run builds them and the app image, later runs reuse them.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import requests
from bridge_fixtures import synthesise
from compose_fixtures import (
    ComposeProject,
    Timings,
    Views,
    clone_head,
    container_of,
    docker,
    replay_into,
    sealer_of,
    signer_address,
    wait_for_one_chain,
    wait_until_sealed_by,
)
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from paho.mqtt.enums import CallbackAPIVersion
from portal_web_fixtures import PortalClient
from web3 import Web3
from web3.contract import Contract

from ingest.readings import reading_json
from pilotchain.chain import (
    Sender,
    connect,
    receipt_within,
    wait_for,
    wait_for_blocks,
    wait_on_chain,
    wait_until_chain_time,
)
from pilotchain.config import MqttConnection
from pilotchain.contract import Deployment, compile_settlement, load_deployment
from pilotchain.errors import ChainError
from pilotchain.events import READING_RECORDED
from pilotchain.keys import KeyStore
from pilotchain.metering import (
    WH,
    Domain,
    MeterReading,
    SignedReading,
    SlotStatus,
    meter_id,
    sign_reading,
)
from pilotchain.settings import PROJECT_ROOT
from pilotchain.trades import (
    TRADE_SETTLED_TOPIC,
    decode_trade_settled_logs,
    parse_event,
    uuid_to_bytes32,
)

pytestmark = [pytest.mark.compose, pytest.mark.slow]

OWNER_UID = 4321
RECORDING = "tests/data/default_2a_one_sided.jsonl"
ONE_SHOT = ("init", "chain-check", "deploy")
LONG_RUNNING = ("bootnode", "validator1", "validator2", "validator3", "rpc-node", "redis",
                "bridge", "faucet", "mosquitto", "ingest", "ingest-http", "ingest-mqtt", "closer",
                "portal-indexer", "portal")
SERVICES = (*ONE_SHOT, *LONG_RUNNING)
SIGNERS = ("validator1", "validator2", "validator3")
NODES = (*SIGNERS, "rpc-node")
# A shorter block period than the default 5 s and a closer that looks every 2 s instead of every
# minute keep the test quick; nothing else differs.
SETTINGS = {"BLOCK_PERIOD": "2", "CLOSER_INTERVAL": "2"}
PERIOD = int(SETTINGS["BLOCK_PERIOD"])
CLOSER_INTERVAL = float(SETTINGS["CLOSER_INTERVAL"])
# Test c's slots: short, so the closer's work shows within a minute (set before any meter).
SLOT_SECONDS, CLOSE_DELAY = 30, 60
# Once a slot is due by the chain's clock, the closer sees it at its next pass and its
# closeSlots goes into a block soon after: ten passes and twenty blocks of chain time leave a
# loaded machine's closer, starved of CPU in its container, room to spare.
CLOSE_MARGIN = int(10 * CLOSER_INTERVAL + 20 * PERIOD)
UP_TIMEOUT = 900  # a cold run builds the app image (apt, pip, npm) inside `up`
# Fifteen containers starting and passing their health checks on two busy cores.
HEALTHY_TIMEOUT = 600
# Longer than geth's 30 s frame read timeout (p2p/rlpx), so every peer drops the cut-off node.
PARTITION_SECONDS = 60
# A node dials a peer again only 35 s after its last dial (geth's p2p dialHistoryExpiration),
# and the cut-off one dialled in vain all along; then it syncs the blocks it missed.
REJOIN_BLOCKS = 35 // PERIOD + 45
REJOIN_WHY = ("geth redials a peer 35 s after its last dial (dialHistoryExpiration), then "
              "imports what it missed")
# A container started again: Docker, then geth opening its database and peering, on a busy
# machine; then the blocks it missed.
RESTART_BLOCKS = 90
RESTART_WHY = "a container and geth starting on a busy machine take a minute or two"
# Waits on a service's work in the stack (the bridge settling, the ingest recording, the
# portal indexing) count the blocks in which that work got no further: a replay settles within
# a few blocks, and a service container starved of CPU still moves every few seconds.
STALL_BLOCKS = 45
STALL_WHY = "a service in the stack moves within seconds of its input"
TRADES = 2000  # test f's replay


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, local_images: dict[str, str],
          timings: Timings) -> Iterator[ComposeProject]:
    """A clone owned by OWNER_UID and its project; always taken down, leaving nothing."""
    checkout = clone_head(tmp_path_factory.mktemp("compose") / "pilotchain", OWNER_UID)
    project = ComposeProject(checkout, local_images, SETTINGS)
    try:
        yield project
    finally:
        with timings.measure("teardown (down -v --remove-orphans)"):
            project.down()


@pytest.fixture(scope="module")
def w3(stack: ComposeProject) -> Web3:
    return connect(stack.url("RPC_HTTP_PORT"))


def deployment_of(stack: ComposeProject) -> Deployment:
    return load_deployment(stack.directory / "data" / "compose" / "settlement.json")


def contract_creations(w3: Web3) -> list[str]:
    """Hashes of every contract-creating transaction on the chain."""
    return [tx["hash"].hex() for number in range(w3.eth.block_number + 1)
            for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]
            if tx["to"] is None]


def reach(w3: Web3, number: int, what: str) -> int:
    """Wait until the RPC node has block ``number``: as long as the chain keeps sealing."""
    return wait_on_chain(lambda: (head := w3.eth.block_number) >= number and head, w3=w3,
                         period=PERIOD, what=what, past=lambda _start, _head: None)


def mined(w3: Web3, tx_hash: bytes, blocks: int = 10) -> Any:
    return receipt_within(w3, HexBytes(tx_hash), blocks=blocks, period=PERIOD)


def while_moving(w3: Web3, condition: Callable[[], Any], progress: Callable[[], object],
                 what: str) -> Any:
    """``condition``, awaited while a service's work moves the chain on (STALL_BLOCKS)."""
    return wait_for_blocks(condition, w3=w3, period=PERIOD, blocks=STALL_BLOCKS, what=what,
                           why=STALL_WHY, progress=progress, interval=1.0)


def test_a_fresh_clone_comes_up_healthy_owned_by_its_user(
        stack: ComposeProject, w3: Web3, timings: Timings) -> None:
    with timings.measure("a: up -d (build app image on a cold run)"):
        # --build: an image pilotchain/app:local from another checkout must not be reused.
        stack.compose("up", "-d", "--build", *SERVICES, timeout=UP_TIMEOUT)
    with timings.measure("a: every service healthy"):
        stack.wait_until_up(LONG_RUNNING, ONE_SHOT, timeout=HEALTHY_TIMEOUT)

    # Written by `init` inside the container, owned by the clone's owner, with no uid setting.
    created = [stack.directory / "genesis.json", *(stack.directory / "keys").rglob("*")]
    assert len(created) > 10, f"init wrote only {created}"
    wrong = {str(path): path.stat().st_uid for path in created if path.stat().st_uid != OWNER_UID}
    assert not wrong, f"files not owned by uid {OWNER_UID}: {wrong}"

    with timings.measure("a: three signers seal in turn"):
        expected = {Web3.to_checksum_address(
            (stack.directory / "keys" / name / "address").read_text().strip()) for name in SIGNERS}
        assert set(w3.provider.make_request("clique_getSigners", ["latest"])["result"]) == {
            address.lower() for address in expected}
        start = w3.eth.block_number
        reach(w3, start + 6, "six more blocks sealed")
        sealers = [sealer_of(w3, number) for number in range(start + 1, start + 7)]
        assert set(sealers) == expected, f"blocks {start + 1}..{start + 6} sealed by {sealers}"
        # With three signers Clique lets none seal two blocks in a row.
        assert all(a != b for a, b in itertools.pairwise(sealers)), sealers

    deployment = deployment_of(stack)
    assert w3.eth.get_code(deployment.address), "no code at the recorded Settlement address"
    assert len(contract_creations(w3)) == 1, "the Settlement was deployed more than once"

    # Redis takes only clients that have the password init generated.
    answer = stack.compose("exec", "-T", "redis", "redis-cli", "XLEN", "pilotchain:trades",
                           timeout=60, check=False)
    refused = answer.stdout + answer.stderr
    assert "NOAUTH" in refused, f"Redis answered a client without the password: {refused!r}"
    assert (stack.directory / "keys" / "redis" / "password").stat().st_uid == OWNER_UID

    with timings.measure("a: faucet pays through its published port"):
        address = w3.eth.account.create().address
        response = requests.post(f"{stack.url('FAUCET_PORT')}/faucet/api/add_key",
                                 json={"public_key": address}, timeout=60)
        assert response.status_code == 200, response.text
        wait_for_blocks(lambda: w3.eth.get_balance(address) > 0, w3=w3, period=PERIOD,
                        blocks=10, what=f"the faucet's payment to {address}",
                        why="the faucet sent it; it goes into one of the next blocks")


# What the `monitoring` profile's Prometheus scrapes (monitoring/prometheus.compose.yml).
MONITORED_JOBS = {"bridge", "ingest", "ingest-mqtt", "closer", "faucet", "portal", "geth"}
# Blockscout's node is scraped too, but not started here (its images need their registries).
NOT_STARTED = {"explorer-node"}


def scrape_health(prometheus: str) -> dict[tuple[str, str], str]:
    """Each active target's health (``up``, ``down``, ``unknown``) by job and node name (the
    job's own name for a service)."""
    targets = requests.get(f"{prometheus}/api/v1/targets", params={"state": "active"},
                           timeout=30).json()["data"]["activeTargets"]
    return {(t["labels"]["job"], t["labels"].get("node", t["labels"]["job"])): t["health"]
            for t in targets}


def test_a2_the_monitoring_profile_scrapes_every_service_and_node(
        stack: ComposeProject, timings: Timings) -> None:
    """`--profile monitoring up -d prometheus` beside the running stack: Prometheus (the local
    stand-in of prom/prometheus) reaches every service's metrics port and every geth node's
    over the internal network, none of them published, and loads the alerting rules; its API
    answers on its published loopback port. Removed again afterwards, volume included."""
    prometheus = stack.url("PROMETHEUS_PORT")
    health: dict[tuple[str, str], str] = {}
    try:
        with timings.measure("a2: prometheus up, every target scraped"):
            stack.compose("--profile", "monitoring", "up", "-d", "prometheus", timeout=300)
            stack.wait_until_up(("prometheus",), (), timeout=HEALTHY_TIMEOUT)

            def all_up() -> bool | None:
                health.update(scrape_health(prometheus))
                started = {key: state for key, state in health.items()
                           if key[1] not in NOT_STARTED}
                return ({job for job, _ in started} == MONITORED_JOBS
                        and set(started.values()) == {"up"}) or None

            # One scrape interval (15 s) after start, every target has answered once.
            try:
                wait_for(all_up, timeout=120, what="every target up in Prometheus")
            except ChainError as error:
                raise AssertionError(f"{error} Targets: {health}") from None
        assert {node for job, node in health if job == "geth"} == {*NODES, *NOT_STARTED}
        up = requests.get(f"{prometheus}/api/v1/query", timeout=30, params={
            "query": 'pilotchain_faucet_balance_ether{job="faucet"}'}).json()["data"]["result"]
        assert up and float(up[0]["value"][1]) > 0  # the faucet's balance, read at scrape time
        rules = requests.get(f"{prometheus}/api/v1/rules", timeout=30).json()["data"]["groups"]
        assert "PilotChainFaucetBalanceLow" in {rule["name"] for group in rules
                                               for rule in group["rules"]}
        # The metrics ports are not published: only the public ones answer on the host.
        published = {row["Service"]: row.get("Publishers") or [] for row in stack.ps()}
        assert not [p for p in published["faucet"] if p.get("TargetPort") == 9114]
        assert not [p for p in published["portal"] if p.get("TargetPort") == 9115]
    finally:
        stack.compose("--profile", "monitoring", "rm", "--stop", "--force", "prometheus",
                      timeout=300)
        docker("volume", "rm", "--force", f"{stack.name}_prometheus-data")


def settled(w3: Web3, deployment: Deployment) -> list[Any]:
    logs = w3.eth.get_logs({"address": deployment.address, "fromBlock": deployment.block_number,
                            "toBlock": "latest", "topics": [TRADE_SETTLED_TOPIC]})
    return decode_trade_settled_logs(logs)


def test_b_a_replayed_recording_settles_exactly_once(
        stack: ComposeProject, w3: Web3, timings: Timings) -> None:
    events = [json.loads(line) for line in
              (stack.directory / RECORDING).read_text().splitlines() if line.strip()]
    deployment = deployment_of(stack)
    # The record names the ABI by its path inside the image; this checkout compiles the same one.
    contract = w3.eth.contract(address=deployment.address, abi=compile_settlement().abi)
    with timings.measure("b: replay + settle one recording"):
        # The documented command (docs/compose.md).
        replay_into(stack, stack.directory / RECORDING)
        while_moving(w3, lambda: len(settled(w3, deployment)) >= len(events),
                     lambda: len(settled(w3, deployment)), f"{len(events)} TradeSettled logs")
    on_chain = settled(w3, deployment)
    ids = [record.trade_id for record in on_chain]
    assert len(ids) == len(set(ids)) == len(events), "a trade was settled twice or not at all"
    by_id = {record.trade_id: record for record in on_chain}
    for event in events:
        trade_id = uuid.UUID(event["trade"]["id"])
        assert by_id[trade_id] == parse_event(event)
        assert contract.functions.isRecorded(uuid_to_bytes32(trade_id)).call()
    # What an auditor runs against the stack (docs/operations.md).
    audited = stack.compose("exec", "-T", "bridge", "pilotchain", "audit", timeout=300)
    assert f": {len(events)} trades in " in audited.stdout and "The books hold" in audited.stdout

    with timings.measure("b: the portal's indexer has every settled trade"):
        operator = portal_operator(stack)
        while_moving(w3, lambda: indexed_trades(operator) >= len(events),
                     lambda: indexed_trades(operator),
                     f"the portal's index to hold {len(events)} trades")
    assert indexed_trades(operator) == len(events)
    # One participant's trades through the API: the recording's, each linked to the explorer.
    seller = str(parse_event(events[0]).seller)
    reply = operator.get(f"/api/participants/{seller}/trades", params={"per_page": "500"})
    assert reply.status_code == 200, reply.text
    trades = reply.json()["trades"]
    assert {t["trade_id"] for t in trades} == {
        str(record.trade_id) for record in map(parse_event, events)
        if seller in (str(record.seller), str(record.buyer))}
    explorer = stack.url("EXPLORER_PORT", host="localhost")
    assert all(t["explorer_url"] == f"{explorer}/tx/{t['tx_hash']}" for t in trades), trades[0]

    # The operator's health view reaches each service by its Compose name, and reads the
    # dead-letter streams in the stack's Redis (with its generated password).
    reply = operator.get("/api/operator/health")
    assert reply.status_code == 200, reply.text
    watched = {s["name"]: s for s in reply.json()["services"]}
    assert set(watched) == {"bridge", "ingest", "MQTT subscriber", "closer"}, watched
    assert all(s["up"] and s["status"] == "ok" for s in watched.values()), watched
    assert {d["stream"]: d["count"] for d in reply.json()["dead_letters"]["streams"]} == {
        "pilotchain:trades:dead": 0, "pilotchain:readings:dead": 0}, reply.text

    # The chart library, from the image's node_modules: the file the lock file pins.
    for name in ("uPlot.iife.min.js", "uPlot.min.css"):
        served = requests.get(f"{stack.url('PORTAL_PORT')}/vendor/uplot/{name}", timeout=30)
        assert served.status_code == 200, f"/vendor/uplot/{name}: {served.status_code}"
        assert served.content == (PROJECT_ROOT / "node_modules" / "uplot" / "dist" / name
                                  ).read_bytes(), f"/vendor/uplot/{name} is not uPlot 1.6.32's"


def portal_operator(stack: ComposeProject) -> PortalClient:
    """The grid operator (keys/operator, the contract's admin) signed in to the stack's portal
    as a browser does, at http://localhost:<port> (the domain its sign-in messages name)."""
    client = PortalClient(stack.url("PORTAL_PORT", host="localhost"))
    reply = client.sign_in(KeyStore(stack.directory / "keys").role("operator").unlock())
    assert reply.status_code == 200, reply.text
    assert client.me()["role"] == "operator"
    return client


def indexed_trades(operator: PortalClient) -> int:
    """How many trades the portal's index holds (the operator's overview)."""
    reply = operator.get("/api/operator/overview")
    assert reply.status_code == 200, reply.text
    total: int = reply.json()["totals"]["trades"]
    return total


def register_meters(w3: Web3, contract: Contract, keys: KeyStore,
                    count: int) -> list[tuple[bytes, LocalAccount, bytes]]:
    """Short slots, then ``count`` throwaway meters, each of a participant of its own,
    registered by the operator (keys/operator, written by the stack's `init`): (meter id,
    meter key, participant)."""
    sender = Sender(w3, keys.role("operator").unlock())
    hashes = [sender.send({"to": contract.address, "gas": 100_000,
                           "data": contract.encode_abi(name, args=[value])})
              for name, value in (("setSlotSeconds", SLOT_SECONDS),
                                  ("setCloseDelay", CLOSE_DELAY))]
    meters = []
    for _ in range(count):
        participant = bytes(16) + uuid.uuid4().bytes
        meter, key = meter_id(uuid.uuid4()), Account.create()
        data = contract.encode_abi("registerMeter",
                                   args=[meter, key.address, participant, participant])
        hashes.append(sender.send({"to": contract.address, "data": data, "gas": 300_000}))
        meters.append((meter, key, participant))
    for tx_hash in hashes:  # all sent at once: a block may not take them all
        assert mined(w3, tx_hash, blocks=10 + len(hashes))["status"] == 1, \
            "registerMeter reverted"
    return meters


def recorded_readings(w3: Web3, deployment: Deployment) -> Counter[tuple[bytes, int]]:
    """How often each (meter, time) has a ReadingRecorded event."""
    logs = w3.eth.get_logs({"address": deployment.address, "fromBlock": deployment.block_number,
                            "toBlock": "latest", "topics": [READING_RECORDED.topic]})
    return Counter((bytes(log["topics"][1]), int.from_bytes(log["topics"][2], "big"))
                   for log in logs)


def connack(connection: MqttConnection, username: str | None, password: str | None) -> str:
    """The broker's answer to a connect with these credentials (none: anonymous), by name."""
    answers: list[str] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    if username is not None:
        client.username_pw_set(username, password)
    client.on_connect = lambda _c, _u, _f, reason, _p: answers.append(str(reason))
    client.connect(connection.host, connection.port, keepalive=10)
    client.loop_start()
    try:
        return wait_for(lambda: answers[0] if answers else None, timeout=60,
                        what=f"the broker at {connection.url} to answer a connect")
    finally:
        client.loop_stop()
        client.disconnect()


def publish_over_mqtt(connection: MqttConnection, signed: SignedReading, password: str) -> None:
    """Publish one reading as a meter does (its own account, its topic, QoS 1), returning
    once the broker has taken it."""
    account = "0x" + signed.reading.meter.hex()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=account)
    client.username_pw_set(account, password)
    client.connect(connection.host, connection.port, keepalive=10)
    client.loop_start()
    try:
        topic = connection.topic_for("0x" + signed.reading.meter.hex())
        client.publish(topic, json.dumps(reading_json(signed)), qos=1).wait_for_publish(60)
    finally:
        client.loop_stop()
        client.disconnect()


def test_c_meter_readings_over_mqtt_and_http_settle_exactly_once(
        stack: ComposeProject, w3: Web3, timings: Timings) -> None:
    deployment = deployment_of(stack)
    contract = w3.eth.contract(address=deployment.address, abi=compile_settlement().abi)
    keys = KeyStore(stack.directory / "keys")
    with timings.measure("c: register two meters"):
        (by_mqtt, mqtt_key, mqtt_party), (by_http, http_key, http_party) = register_meters(
            w3, contract, keys, 2)
    slot = int(contract.functions.slotSeconds().call())
    assert slot == SLOT_SECONDS
    time = w3.eth.get_block("latest")["timestamp"] // slot * slot - slot
    domain = Domain(deployment.chain_id, deployment.address)
    over_mqtt = sign_reading(MeterReading(by_mqtt, time, 1200, 30), mqtt_key, domain)
    # The HTTP meter also read at the start of the slot before: that slot can balance. It is
    # due CLOSE_DELAY after its end, later than the readings arrive.
    before = sign_reading(MeterReading(by_http, time - slot, 4400, 0), http_key, domain)
    over_http = sign_reading(MeterReading(by_http, time, 4500, 0), http_key, domain)

    # The operator's documented way in Compose: the one-shot init service (the project
    # mounted writable, run as its owner) issues the meter's MQTT account and an uploader's
    # credential; the broker notices the accounts file changed.
    with timings.measure("c: the meter's MQTT account and an uploader's credential"):
        account = "0x" + by_mqtt.hex()
        issued = stack.compose("run", "--rm", "init", "pilotchain", "meters", "mqtt-password",
                               account, timeout=300).stdout
        password = issued.split(f"MQTT account {account}, password ", 1)[1].split(" ", 1)[0]
        issued = stack.compose("run", "--rm", "init", "pilotchain", "uploaders", "issue",
                               "compose-test", timeout=300).stdout
        credential = issued.split("Bearer ", 1)[1].split("'", 1)[0]
    broker = MqttConnection(port=stack.ports["MQTT_PORT"])
    assert connack(broker, None, None) == "Not authorized", "the broker took an anonymous client"
    assert connack(broker, account, "wrong") == "Not authorized"
    assert connack(broker, "meter", "any") == "Not authorized"  # no shared meters' account
    wait_for(lambda: connack(broker, account, password) == "Success" or None, timeout=60,
             what="the broker to take the meter's new account")

    with timings.measure("c: one reading over MQTT, one over HTTP, on chain"):
        publish_over_mqtt(broker, over_mqtt, password)
        upload = [reading_json(before), reading_json(over_http)]
        url = f"{stack.url('INGEST_HTTP_PORT')}/api/readings"
        assert requests.post(url, json=upload, timeout=60).status_code == 401
        answer = requests.post(url, json=upload, timeout=60,
                               headers={"Authorization": f"Bearer {credential}"})
        assert answer.status_code == 202, answer.text
        assert (answer.json()["queued"], answer.json()["refused"]) == (2, 0), answer.text
        expected = {(by_mqtt, time), (by_http, time - slot), (by_http, time)}
        while_moving(w3, lambda: expected <= set(recorded_readings(w3, deployment)) or None,
                     lambda: recorded_readings(w3, deployment),
                     "the MQTT and the HTTP reading on chain")
    for signed in (over_mqtt, before, over_http):
        r = signed.reading
        present, import_wh, export_wh, _ = contract.functions.readingOf(r.meter, r.time).call()
        assert (present, import_wh, export_wh) == (True, r.import_wh, r.export_wh)
    recorded = recorded_readings(w3, deployment)
    assert {key: recorded[key] for key in expected} == dict.fromkeys(expected, 1), recorded
    dead = stack.compose("exec", "-T", "redis", "sh", "-c",
                         'redis-cli -a "$(cat /pilotchain/keys/redis/password)" '
                         "--no-auth-warning XLEN pilotchain:readings:dead", timeout=120)
    assert dead.stdout.strip() == "0", f"readings were dead-lettered: {dead.stdout!r}"

    # The closer service: the HTTP meter's slot with both readings balances (100 Wh imported,
    # nothing bought); the MQTT meter's slot lacks its end reading and closes unmetered. Both
    # are due once the chain's clock passes the later one's end and the close delay.
    due = time + slot + CLOSE_DELAY
    with timings.measure("c: the closer closes both slots"):
        try:
            wait_until_chain_time(
                lambda: (contract.functions.slotOf(http_party, time - slot).call()[0] != 0
                         and contract.functions.slotOf(mqtt_party, time).call()[0] != 0)
                or None, w3=w3, period=PERIOD, until=due + CLOSE_MARGIN, interval=1.0,
                what="the closer to close both meters' slots",
                why=f"slot {time} ends at {time + slot} and is due {CLOSE_DELAY} s later, at "
                    f"{due}; then {CLOSE_MARGIN} s of chain time, ten passes of the closer "
                    f"every {CLOSER_INTERVAL:g} s and twenty blocks of {PERIOD} s")
        except ChainError as error:
            logs = stack.compose("logs", "--no-color", "--tail", "40", "closer", check=False)
            raise AssertionError(f"{error}\nThe closer's log:\n{logs.stdout[-6000:]}") from None
    assert contract.functions.slotOf(http_party, time - slot).call()[0] == SlotStatus.BALANCED
    assert contract.functions.slotOf(mqtt_party, time).call()[0] == SlotStatus.UNMETERED
    balanced = contract.events.SlotBalanced().get_logs(
        from_block=deployment.block_number, argument_filters={"participant": http_party})
    assert [(e["args"]["slot"], e["args"]["importEnergy"]) for e in balanced
            if e["args"]["slot"] == time - slot] == [(time - slot, 100 * WH)]


def test_d_a_killed_validator_leaves_two_sealing_and_catches_up(
        stack: ComposeProject, w3: Web3, timings: Timings) -> None:
    victim = "validator2"
    victim_address = signer_address(stack, victim)
    with timings.measure("d: docker kill validator2, 6 blocks by the others"):
        docker("kill", container_of(stack, victim))
        killed_at = w3.eth.block_number
        # The block being sealed at the kill may still be the victim's; the next six are not.
        reach(w3, killed_at + 7, f"six blocks after {killed_at + 1} with {victim} killed")
        sealers = {sealer_of(w3, number) for number in range(killed_at + 2, killed_at + 8)}
        assert victim_address not in sealers, f"{victim} sealed while killed"
        assert len(sealers) == 2, f"blocks after the kill sealed by {sealers}"
    with timings.measure("d: validator2 started, catches up"):
        stack.compose("start", victim, timeout=300)
        target = w3.eth.block_number + 2
        wait_for_one_chain(stack, (victim, "rpc-node"), target, w3=w3, period=PERIOD,
                           blocks=RESTART_BLOCKS, why=RESTART_WHY,
                           what=f"{victim} to catch up after its restart")
        wait_until_sealed_by(w3, victim_address, target, period=PERIOD,
                             what=f"a block sealed by {victim} after its restart")


def test_e_a_partitioned_validator_rejoins_one_chain(
        stack: ComposeProject, w3: Web3, timings: Timings) -> None:
    victim = "validator3"
    container = container_of(stack, victim)
    network = f"{stack.name}_chain"
    views = Views(stack, (victim,))
    cut_off = signer_address(stack, victim)
    signers = sorted((Web3.to_checksum_address(address) for address in
                      w3.provider.make_request("clique_getSigners", ["latest"])["result"]),
                     key=str.lower)  # Clique orders signers by their bytes

    def calm() -> int | None:
        """A head sealed by one of the two that stay, the next block in turn for the other,
        and young enough that the cut lands before that block is sealed.
        Cut after another head, the two could each seal the next block out of turn at once:
        each then stands on its own fork with the other's block of equal weight, and Clique
        lets neither seal again (it halted so at block 94, and at block 84 when the head read
        here was a block behind the validators' on a busy machine). No block is sealed before
        its parent's time plus the period, so a head less than a period minus a second old
        is every node's head, with a second left for the cut."""
        block = w3.eth.get_block("latest")
        head = block["number"]
        staying = sealer_of(w3, head) != cut_off and signers[(head + 1) % len(signers)] != cut_off
        young = time.time() < block["timestamp"] + PERIOD - 1
        return head if staying and young else None

    with timings.measure("e: validator3 cut off for 60 s"):
        wait_for_blocks(calm, w3=w3, blocks=12, period=PERIOD, interval=0.1,
                        what="a young head from which the two staying signers seal in turn",
                        why="one of every three heads is sealed by one of them with the next "
                            "in turn for the other, and is read within a second of its time")
        docker("network", "disconnect", network, container)
        cut_at = time.monotonic()
        try:
            cut_head = w3.eth.block_number
            # geth's own clock: a peer that sends nothing for 30 s is dropped.
            wait_for(lambda: views.peers(victim) == 0, timeout=2 * PARTITION_SECONDS,
                     interval=2.0, what=f"{victim} to lose its peers once cut off")
            reach(w3, cut_head + 5, "the two connected signers to go on sealing")
            # The length of the fault, not a synchronisation: the partition lasts 60 s.
            time.sleep(max(0.0, PARTITION_SECONDS - (time.monotonic() - cut_at)))
        finally:
            # As an operator would: by name, with the service's DNS alias, no fixed address.
            docker("network", "connect", "--alias", victim, network, container)
    with timings.measure("e: validator3 back on the one chain"):
        target = w3.eth.block_number + 2
        wait_for_one_chain(stack, NODES, target, w3=w3, period=PERIOD, blocks=REJOIN_BLOCKS,
                           why=REJOIN_WHY,
                           what=f"{victim} to rejoin after {PARTITION_SECONDS} s cut off")
        assert views.peers(victim), f"{victim} has no peers: {views}"
        wait_until_sealed_by(w3, signer_address(stack, victim), target, period=PERIOD,
                             what=f"a block sealed by {victim} after it rejoined")


def test_f_the_bridge_killed_mid_replay_settles_every_trade_once(
        stack: ComposeProject, w3: Web3, timings: Timings) -> None:
    deployment = deployment_of(stack)
    lines = synthesise(TRADES, seed=11)
    trade_ids = {json.loads(line)["trade"]["id"] for line in lines}
    assert len(trade_ids) == TRADES
    replay = stack.directory / "data" / "faults" / "trades.jsonl"
    replay.parent.mkdir(parents=True, exist_ok=True)
    replay.write_text("\n".join(lines) + "\n")
    replay.chmod(0o644)
    earlier = Counter(str(record.trade_id) for record in settled(w3, deployment))
    # This replay's trades on chain (tests b and c settled others before).
    count: Callable[[], int] = (  # noqa: E731
        lambda: len(settled(w3, deployment)) - earlier.total())
    with timings.measure(f"f: replay {TRADES}, kill the bridge mid-way"):
        replay_into(stack, replay)
        settled_before_kill = wait_for_blocks(
            count, w3=w3, period=PERIOD, blocks=STALL_BLOCKS, interval=0.1, why=STALL_WHY,
            what="the bridge to settle its first trades")
        docker("kill", container_of(stack, "bridge"))
        at_kill = count()
        assert at_kill < TRADES, (
            f"all {TRADES} trades were settled before the kill ({settled_before_kill} seen at "
            f"first): the kill tested nothing")
    with timings.measure("f: bridge started again, every trade settled"):
        stack.compose("start", "bridge", timeout=300)
        # A restarted bridge first waits up to its recovery timeout (60 s) for the receipts of
        # what it had in flight: that long without a new trade settled is expected.
        wait_for_blocks(lambda: count() >= TRADES, w3=w3, period=PERIOD, interval=1.0,
                        blocks=STALL_BLOCKS + 60 // PERIOD, progress=count,
                        why=f"{STALL_WHY}, after the restarted bridge's 60 s recovery",
                        what=f"{TRADES} trades settled after the restart ({at_kill} before "
                             f"the kill)")
    on_chain = Counter(str(record.trade_id) for record in settled(w3, deployment)) - earlier
    twice = {trade_id: n for trade_id, n in on_chain.items() if n > 1}
    assert not twice, f"settled more than once: {twice}"
    assert set(on_chain) == trade_ids, (
        f"missing {len(trade_ids - set(on_chain))}, unknown {len(set(on_chain) - trade_ids)}")


# Images that stand in for Blockscout's, nginx's and Postgres's in the dry runs below: a plan
# needs every image present, never runs any, and ours reach no registry.
def stand_in_images(stack: ComposeProject) -> dict[str, str]:
    debian = stack.images["PYTHON_IMAGE"]
    repository, _, tag = debian.rpartition(":")
    return {"BLOCKSCOUT_BACKEND_REPOSITORY": repository, "BLOCKSCOUT_BACKEND_TAG": tag,
            "BLOCKSCOUT_FRONTEND_REPOSITORY": repository, "BLOCKSCOUT_FRONTEND_TAG": tag,
            "BLOCKSCOUT_VERIFIER_IMAGE": debian, "POSTGRES_IMAGE": debian,
            "BLOCKSCOUT_REDIS_IMAGE": stack.images["REDIS_IMAGE"], "NGINX_IMAGE": debian}


def test_f2_a_plain_up_never_starts_the_simulation(stack: ComposeProject, w3: Web3) -> None:
    """A plain `docker compose up -d` (twice, as after a reboot) would not create a gsy-e
    container; only `--profile simulation` would. The engine's own plan of the containers `up`
    creates (`create --dry-run`, the same services and profiles), without pulling: Blockscout's
    images cannot be had here, so a real plain `up` cannot run. The plan is for this checkout
    under a project name of its own (a dry run creates nothing, checked), and the running stack
    has no gsy-e and no new trade."""
    before = len(settled(w3, deployment_of(stack)))
    plan = ComposeProject(stack.directory, {**stack.images, **stand_in_images(stack)},
                          stack.settings, f"{stack.name}-plan")
    container = f"Container {plan.name}-gsy-e-1"
    for _ in range(2):
        planned = plan.compose("create", "--dry-run", "--pull", "never", timeout=300)
        output = planned.stdout + planned.stderr
        assert f"Container {plan.name}-bridge-1  Created" in output, output[-2000:]
        assert container not in output, "a plain up would start the simulation"
    with_profile = plan.compose("--profile", "simulation", "create", "--dry-run", "--pull",
                                "never", timeout=300)
    assert f"{container}  Created" in with_profile.stdout + with_profile.stderr
    assert not plan.leftovers(), "a dry run left something behind"
    assert not [row for row in stack.ps() if row.get("Service") == "gsy-e"]
    assert len(settled(w3, deployment_of(stack))) == before


def test_g_stop_and_up_keep_the_chain_and_down_leaves_nothing(
        stack: ComposeProject, w3: Web3, timings: Timings) -> None:
    first_block = w3.eth.get_block(1)["hash"]
    deployment = deployment_of(stack)
    operator = portal_operator(stack)
    trades = len(settled(w3, deployment))
    with timings.measure("g: the portal's index holds every settled trade"):
        while_moving(w3, lambda: indexed_trades(operator) >= trades,
                     lambda: indexed_trades(operator),
                     f"the portal's index to hold the {trades} trades on chain")
    head = w3.eth.block_number
    # Test d's killed validator rewound when it started again; the restart here must not.
    stopped_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with timings.measure("g: stop (geth's grace period)"):
        stack.compose("stop", timeout=600)
    with timings.measure("g: up -d again until healthy"):
        stack.compose("up", "-d", *SERVICES, timeout=600)
        stack.wait_until_up(LONG_RUNNING, ONE_SHOT, timeout=HEALTHY_TIMEOUT)
    reach(w3, head + 1, f"blocks after the restart (head was {head})")
    assert w3.eth.get_block(1)["hash"] == first_block, "block 1 changed: the chain was rebuilt"
    assert deployment_of(stack) == deployment, "the Settlement record changed"
    assert w3.eth.get_code(deployment.address)
    assert len(contract_creations(w3)) == 1, "the restart deployed another Settlement"
    logs = stack.compose("logs", "--no-color", "--since", stopped_at, timeout=120).stdout
    rewinds = [line for line in logs.splitlines() if "Head state missing" in line]
    assert not rewinds, "geth rewound after the restart:\n" + "\n".join(rewinds)
    # The index survived on its volume: the portal still has every trade, none twice.
    assert indexed_trades(portal_operator(stack)) == trades

    # Every service ends on SIGTERM within its grace period: none waits out the timeout to be
    # killed (exit code 137), which would hold `docker compose down` up for minutes.
    with timings.measure("g: stop, each service on SIGTERM"):
        stack.compose("stop", "--timeout", "120", timeout=600)
    killed = {service: code for service, code in stack.exit_codes().items() if code == 137}
    assert not killed, f"ignored SIGTERM and were killed after 120 s: {killed}"

    # Keys and genesis made anew beside the old chain's volumes: no node starts on them.
    with timings.measure("g: down (volumes kept), new genesis, up refused"):
        stack.compose("down", "--timeout", "120")
        stack.compose("run", "--rm", "--no-deps", "init", "pilotchain", "init", "--force")
        refused = stack.compose("up", "-d", "validator1", check=False)
        assert refused.returncode != 0, refused.stdout
        said = stack.compose("logs", "--no-log-prefix", "chain-check").stdout.strip()
        assert said.startswith("check-chain-data: validator1's data (/data/validator1) holds "
                               "another chain (genesis 0x"), said
        assert said.endswith("or remove its data (docker compose down -v) to start the new "
                             "chain."), said
        assert stack.compose("ps", "-q", "validator1").stdout.strip() == ""
    with timings.measure("g: down -v"):
        stack.down()


# Last, with this stack down: several organisations' hosts in Compose (docker-compose.hosts.yml),
# here because the Docker engine's tests are one module, which one worker runs.
from compose_hosts_cases import (  # noqa: E402
    net,  # noqa: F401  (the fixture)
    test_hosts_a_three_organisations_found_the_network_in_compose,  # noqa: F401
    test_hosts_b_a_fourth_organisation_joins_by_vote_in_compose,  # noqa: F401
    test_hosts_c_an_organisation_s_apps_settle_on_its_own_rpc_node_in_compose,  # noqa: F401
)
