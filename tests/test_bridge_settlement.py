"""The bridge on real Redis and the real local Clique network: recordings settled exactly
once and field by field, bills, dead letters, duplicate deliveries."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from bridge_fixtures import (
    NOTICE_SECONDS,
    STALL_BLOCKS,
    STREAM,
    BridgeThread,
    Deployed,
    bridge_env,
    bridge_settings,
    duplicates,
    publish_lines,
    read_lines,
    settled_on_chain,
    synthesise,
    wait_for_work,
    work_progress,
)
from recordings import RECORDINGS, kept_on_chain

from bridge.errors import RecorderRoleMissing
from bridge.events import EVENT_FIELD
from pilotchain.chain import Sender, connect, wait_for
from pilotchain.contract import settlement_contract
from pilotchain.trades import compute_bills, parse_event, uuid_to_bytes32
from runner.bridge import BridgeService

pytestmark = pytest.mark.chain


def group_pending(redis_url: str, stream: str = STREAM) -> int:
    """Entries delivered to the bridge's group but not acknowledged."""
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.xpending(stream, "settlement-bridge")["pending"])
    finally:
        client.close()


def test_every_recording_is_settled_once_field_by_field_with_bills(
        deployed: Deployed, redis_url: str) -> None:
    lines = read_lines(RECORDINGS)
    events = [json.loads(line) for line in lines]
    publish_lines(redis_url, lines)
    with BridgeThread(bridge_settings(deployed, redis_url)) as metrics:
        wait_for_work(deployed.net, lambda: metrics.get("settled") == len(lines),
                      progress=work_progress(metrics),
                      what=f"the bridge to settle all {len(lines)} recorded trades")
        acknowledged(redis_url)
        assert metrics.get("dead_lettered") == 0
        assert metrics.get("recorded") == len(lines)

    on_chain = settled_on_chain(deployed)
    assert duplicates(on_chain) == {}
    by_id = {record.trade_id: record for record in on_chain}
    assert set(by_id) == {uuid.UUID(event["trade"]["id"]) for event in events}
    for event in events:
        trade = event["trade"]
        record = by_id[uuid.UUID(trade["id"])]
        assert record == parse_event(event)
        assert record.as_gsy_fields() == {
            "id": trade["id"],
            "market_id": event["market_id"],
            "time_slot": trade["time_slot"],
            "seller": {"uuid": trade["seller"]["uuid"],
                       "origin_uuid": trade["seller"]["origin_uuid"]},
            "buyer": {"uuid": trade["buyer"]["uuid"],
                      "origin_uuid": trade["buyer"]["origin_uuid"]},
            "energy": kept_on_chain(trade["energy"]),
            "price": kept_on_chain(trade["price"]),
            "fee_price": kept_on_chain(trade["fee_price"]),
        }, f"trade {trade['id']} differs from its recording"

    contract = settlement_contract(connect(deployed.net.rpc_url), deployed.deployment)
    for participant, bill in compute_bills(parse_event(e) for e in events).items():
        assert contract.functions.billOf(uuid_to_bytes32(participant)).call() == \
            list(bill.as_tuple()), f"bill of {participant}"


def acknowledged(redis_url: str) -> None:
    """Every stream entry acknowledged: the bridge does it right after the receipts, a Redis
    call, so this wait is in seconds."""
    wait_for(lambda: group_pending(redis_url) == 0, timeout=NOTICE_SECONDS,
             what="every stream entry to be acknowledged")


def malformed_events() -> dict[str, tuple[dict[str, str] | dict[str, bytes], str]]:
    """Bad stream entries by name: (fields, a phrase their dead-letter reason must hold)."""
    good = json.loads(synthesise(1, seed=99)[0])

    def variant(change: object) -> dict[str, str]:
        event = json.loads(json.dumps(good))
        change(event)  # type: ignore[operator]
        return {EVENT_FIELD: json.dumps(event)}

    return {
        "garbage JSON": ({EVENT_FIELD: '{"market_id": "6b3c", "trade": {'}, "is not JSON"),
        "not UTF-8": ({EVENT_FIELD: b"\xff\xfe{\x00garbage"}, "is not JSON"),
        "no event field": ({"payload": "{}"}, "has no 'event' field"),
        "a JSON list": ({EVENT_FIELD: "[1, 2]"}, "must be a JSON object"),
        "missing market": (variant(lambda e: e.pop("market_id")), "'market_id' is missing"),
        "missing seller": (variant(lambda e: e["trade"].pop("seller")), "'seller' is missing"),
        "missing energy": (variant(lambda e: e["trade"].pop("energy")), "'energy' is missing"),
        "negative energy": (variant(lambda e: e["trade"].update(energy=-0.5)),
                            "'energy' must not be negative"),
        "huge energy": (variant(lambda e: e["trade"].update(energy=1e40)),
                        "'energy' must be at most"),
        "zero energy": (variant(lambda e: e["trade"].update(energy=0.0)),
                        "'energy' must be at least"),
        "energy as text": (variant(lambda e: e["trade"].update(energy="lots")),
                           "'energy' must be a number"),
        "unknown type": (variant(lambda e: e["trade"].update(type="BalancingTrade")),
                         "'type' is 'BalancingTrade'"),
        "wrong trade uuid": (variant(lambda e: e["trade"].update(id="not-a-uuid")),
                             "'id' is not a uuid"),
        "wrong buyer uuid": (variant(lambda e: e["trade"]["buyer"].update(uuid="12345")),
                             "'buyer.uuid' is not a uuid"),
        "nil seller uuid": (variant(lambda e: e["trade"]["seller"].update(uuid=str(uuid.UUID(
            int=0)))), "'seller.uuid' is the nil uuid"),
        "bad time slot": (variant(lambda e: e["trade"].update(time_slot="yesterday")),
                          "'time_slot' is not a usable time"),
    }


def test_malformed_events_are_dead_lettered_with_a_reason_and_good_ones_settle(
        deployed: Deployed, redis_url: str) -> None:
    bad = malformed_events()
    good = synthesise(3 * len(bad), seed=7)
    client = redis.Redis.from_url(redis_url)
    expected: dict[str, tuple[str, str]] = {}
    pipe = client.pipeline(transaction=False)
    for index, (fields, _) in enumerate(bad.values()):
        for line in good[3 * index:3 * index + 3]:
            pipe.xadd(STREAM, {EVENT_FIELD: line})
        pipe.xadd(STREAM, fields)  # type: ignore[arg-type]
    ids = [entry_id.decode() for entry_id in pipe.execute()]
    for index, (name, (_, phrase)) in enumerate(bad.items()):
        expected[ids[4 * index + 3]] = (name, phrase)

    with BridgeThread(bridge_settings(deployed, redis_url)) as metrics:
        wait_for_work(deployed.net, lambda: metrics.get("settled") == len(good)
                      and metrics.get("dead_lettered") == len(bad),
                      progress=work_progress(metrics),
                      what=f"{len(good)} good trades settled and {len(bad)} dead-lettered")
        acknowledged(redis_url)

    dead = client.xrange(f"{STREAM}:dead")
    client.close()
    reasons = {fields[b"entry_id"].decode(): fields[b"reason"].decode() for _, fields in dead}
    assert set(reasons) == set(expected)
    for entry_id, (name, phrase) in expected.items():
        assert phrase in reasons[entry_id], f"{name}: {reasons[entry_id]!r}"
    assert all(fields[b"stream"] == STREAM.encode() and fields[b"rejected_at"]
               for _, fields in dead)
    on_chain = {record.trade_id for record in settled_on_chain(deployed)}
    assert on_chain == {uuid.UUID(json.loads(line)["trade"]["id"]) for line in good}


def test_a_trade_delivered_twice_is_settled_once(deployed: Deployed, redis_url: str) -> None:
    lines = synthesise(40, seed=3)
    # Copies while the first is queued, and later ones after it is already on chain.
    publish_lines(redis_url, lines + lines[:10])
    with BridgeThread(bridge_settings(deployed, redis_url)) as metrics:
        wait_for_work(deployed.net, lambda: metrics.get("settled") == 40,
                      progress=work_progress(metrics), what="40 distinct trades settled")
        publish_lines(redis_url, lines[:5])
        wait_for_work(deployed.net,
                      lambda: metrics.get("settled") == 45 and group_pending(redis_url) == 0,
                      progress=work_progress(metrics, lambda: group_pending(redis_url)),
                      what="the 5 late copies to be sent, skipped and acknowledged")
        assert metrics.get("duplicates") == 10
        assert metrics.get("already_recorded") == 5
    on_chain = settled_on_chain(deployed)
    assert len(on_chain) == 40
    assert duplicates(on_chain) == {}


def test_the_service_runs_the_bridge_process_until_stopped(
        deployed: Deployed, redis_url: str, tmp_path: Path) -> None:
    settings = bridge_settings(deployed, redis_url)
    service = BridgeService(settings, bridge_env(settings), tmp_path / "pids")
    try:
        assert service.start() is True  # returns once /health answers 200
        assert service.start() is False  # already running
        assert service.status() == {"bridge_metrics_url": f"{settings.metrics_url}/metrics",
                                    "bridge_status_url": f"{settings.metrics_url}/status"}
        url = service.status()["bridge_status_url"]
        publish_lines(redis_url, synthesise(20, seed=5))
        wait_for_work(deployed.net, lambda: requests.get(url, timeout=10).json()["settled"] == 20,
                      progress=work_progress(lambda: requests.get(url, timeout=10).json()),
                      what="the service's bridge to settle 20 trades")
    finally:
        assert service.stop() is True  # SIGTERM was enough
    assert not service.process.is_running()
    assert "Stopping on signal 15" in (tmp_path / "logs" / "bridge.log").read_text()


def test_a_revoked_recorder_stops_the_bridge_without_acknowledging(
        deployed: Deployed, redis_url: str) -> None:
    w3 = connect(deployed.net.rpc_url)
    contract = settlement_contract(w3, deployed.deployment)
    operator = deployed.net.keys.role("operator").unlock()
    bridge_address = deployed.net.keys.role("bridge").address
    role = contract.functions.RECORDER_ROLE().call()

    def as_operator(function: Any) -> None:
        tx = function.build_transaction({"from": operator.address})
        receipt = deployed.net.receipt(Sender(w3, operator).send(
            {"to": tx["to"], "data": tx["data"]}))
        assert receipt["status"] == 1

    lines = synthesise(30, seed=21)
    publish_lines(redis_url, lines[:10])
    runner = BridgeThread(bridge_settings(deployed, redis_url))
    with runner as metrics:
        wait_for_work(deployed.net, lambda: metrics.get("settled") == 10,
                      progress=work_progress(metrics), what="10 trades settled")
        as_operator(contract.functions.revokeRole(role, bridge_address))
        publish_lines(redis_url, lines[10:])
        deployed.net.wait_for_blocks(
            lambda: not runner.thread.is_alive(), blocks=STALL_BLOCKS,
            what="the bridge to stop on the reverted batch",
            why="the batch reverts in the next block, and its receipt stops the bridge")
        runner.error, error = None, runner.error
    assert isinstance(error, RecorderRoleMissing), error
    assert "refuses the bridge account" in str(error) and "RECORDER_ROLE" in str(error)
    assert metrics.get("reverted_batches") == 1
    assert group_pending(redis_url) == 20  # nothing acknowledged that is not on chain

    as_operator(contract.functions.grantRole(role, bridge_address))
    with BridgeThread(bridge_settings(deployed, redis_url)) as metrics:
        wait_for_work(deployed.net,
                      lambda: metrics.get("settled") == 20 and group_pending(redis_url) == 0,
                      progress=work_progress(metrics, lambda: group_pending(redis_url)),
                      what="the 20 trades settled after the role is back")
    assert {r.trade_id for r in settled_on_chain(deployed)} == \
        {uuid.UUID(json.loads(line)["trade"]["id"]) for line in lines}
