"""The bridge under faults, on real Redis and the real local Clique network: SIGKILLed at
random moments, Redis restarted, the RPC node restarted; nothing lost, nothing repeated."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
import requests
from bridge_fixtures import (
    NOTICE_SECONDS,
    START_SECONDS,
    STREAM,
    BridgeProcess,
    BridgeThread,
    Deployed,
    bridge_settings,
    duplicates,
    settled_on_chain,
    synthesise,
    wait_for_work,
    work_progress,
)
from eth_abi import decode as abi_decode

from pilotchain.chain import connect, wait_for
from pilotchain.errors import ChainError
from pilotchain.settings import PROJECT_ROOT
from pilotchain.trades import BATCH_RECORDED_TOPIC
from pilotchain_gsy_plugin import PluginSettings, TradePublisher
from runner.localnet import RPC_NODE, LocalNetwork
from runner.redis import RedisService

pytestmark = [pytest.mark.chain, pytest.mark.slow]


def input_ids(lines: list[str]) -> set[uuid.UUID]:
    return {uuid.UUID(json.loads(line)["trade"]["id"]) for line in lines}


def group_pending(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.xpending(STREAM, "settlement-bridge")["pending"])
    finally:
        client.close()


def skipped_by_contract(target: Deployed) -> int:
    """Trades the contract skipped as already recorded (sent twice), from BatchRecorded."""
    w3 = connect(target.net.rpc_url)
    logs = w3.eth.get_logs({"address": target.deployment.address,
                            "fromBlock": target.deployment.block_number, "toBlock": "latest",
                            "topics": [BATCH_RECORDED_TOPIC]})
    return sum(abi_decode(["uint256", "uint256"], bytes(log["data"]))[1] for log in logs)


def start_replay(redis_url: str, lines: list[str], rate: int, tmp_path: Path
                 ) -> subprocess.Popen[bytes]:
    """``python -m bridge.replay`` (what ./scripts/replay runs) publishing ``lines`` paced."""
    recording = tmp_path / "trades.jsonl"
    recording.write_text("\n".join(lines) + "\n")
    return subprocess.Popen(
        [sys.executable, "-m", "bridge.replay", str(recording), "--rate", str(rate),
         "--redis-url", redis_url, "--stream", STREAM],
        cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkilled_at_random_moments_the_bridge_neither_loses_nor_repeats(
        deployed: Deployed, redis_url: str, tmp_path: Path) -> None:
    lines = synthesise(1200, seed=11)
    # A small gas budget (~80 trades a block) keeps entries read but unacknowledged and
    # batches in flight at every moment, so each kill lands in the middle of the work.
    settings = bridge_settings(deployed, redis_url, gas_budget=0.1, max_batch=40)
    bridge = BridgeProcess(settings, tmp_path / "bridge.log")
    replay = start_replay(redis_url, lines, rate=100, tmp_path=tmp_path)
    rng = random.Random(2024)
    kills: list[dict | None] = []
    try:
        for round_ in range(6):
            bridge.start()
            if round_ % 2:
                # The dangerous window: batches sent, receipts not yet acknowledged.
                wait_for(lambda: (m := bridge.metrics()) and m["in_flight_transactions"] > 0,
                         timeout=START_SECONDS,
                         what="the restarted bridge to have a batch in flight")
            else:
                # Fault injection at a random moment once the process is up (connecting,
                # recovering or settling); the pause is deliberate, not synchronisation.
                wait_for(bridge.metrics, timeout=START_SECONDS,
                         what="the bridge's metrics endpoint")
                time.sleep(rng.uniform(0.0, 3.0))
            kills.append(bridge.metrics())
            bridge.kill()
        bridge.start()
        # 1,200 lines at 100 a second, started before the kills: done long before this.
        wait_for(lambda: replay.poll() is not None, timeout=START_SECONDS,
                 what="the replay to finish")
        assert replay.returncode == 0, replay.stderr.read() if replay.stderr else ""
        wait_for_work(deployed.net,
                      lambda: (m := bridge.metrics()) and m["pending"] == 0
                      and group_pending(redis_url) == 0
                      and len(settled_on_chain(deployed)) >= len(lines),
                      progress=work_progress(bridge.metrics, lambda: group_pending(redis_url)),
                      what="every trade settled and acknowledged after the kills")
        health = requests.get(f"{settings.metrics_url}/health", timeout=30)
        assert health.status_code == 200, health.text
    except BaseException:
        print(bridge.log_tail(80))
        raise
    finally:
        bridge.stop()
        if replay.poll() is None:
            replay.kill()
            replay.wait()

    on_chain = settled_on_chain(deployed)
    assert duplicates(on_chain) == {}
    assert {record.trade_id for record in on_chain} == input_ids(lines)
    assert len(on_chain) == len(lines)
    in_flight_kills = sum(1 for m in kills if m and m["in_flight_transactions"])
    states = [f"{m['state']}/{m['in_flight_transactions']} tx" for m in kills if m]
    print(f"killed while {', '.join(states)}")
    assert in_flight_kills >= 3
    # The bridge's own recovery (wait for its transactions, then isRecorded) kept every
    # trade from being sent twice; the contract's duplicate skip was never needed.
    assert skipped_by_contract(deployed) == 0


class Producer:
    """gsy-e's market stand-in: the real plug-in publisher fed at a steady rate."""

    def __init__(self, redis_url: str, lines: list[str], rate: float) -> None:
        self.publisher = TradePublisher(PluginSettings(redis_url=redis_url, stream=STREAM))
        self.events = [json.loads(line) for line in lines]
        self.rate = rate
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="producer")

    def _run(self) -> None:
        started = time.monotonic()
        for index, event in enumerate(self.events):
            time.sleep(max(0.0, started + index / self.rate - time.monotonic()))
            self.publisher.publish(event)
        self.done.set()

    def __enter__(self) -> Producer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(timeout=START_SECONDS)
        self.publisher.close(timeout=1.0)


def test_redis_and_rpc_node_restarts_during_a_replay_lose_nothing(
        chain: LocalNetwork, deployed: Deployed, redis_server: RedisService, redis_url: str
        ) -> None:
    lines = synthesise(700, seed=12)
    settings = bridge_settings(deployed, redis_url)
    with BridgeThread(settings) as metrics, Producer(redis_url, lines, rate=100) as producer:
        progress = work_progress(metrics, lambda: group_pending(redis_url))
        wait_for_work(chain, lambda: metrics.get("settled") >= 100, progress=progress,
                      what="100 trades settled before Redis goes down")
        redis_server.stop()
        wait_for(lambda: metrics.get("redis") == "unreachable", timeout=NOTICE_SECONDS,
                 what="the bridge to notice Redis is gone")
        wait_for(lambda: producer.publisher.pending() > 0, timeout=NOTICE_SECONDS,
                 what="the plug-in to buffer trades while Redis is gone")
        redis_server.start()
        wait_for(lambda: metrics.get("redis") == "ok", timeout=START_SECONDS,
                 what="the bridge to reconnect to Redis")
        settled_before = metrics.get("settled")
        wait_for_work(chain, lambda: metrics.get("settled") >= settled_before + 100,
                      progress=progress,
                      what="100 more trades settled before the RPC node goes down")
        chain.stop_node(RPC_NODE)
        wait_for(lambda: metrics.get("chain") == "unreachable", timeout=NOTICE_SECONDS,
                 what="the bridge to notice the RPC node is gone")
        chain.start_node(RPC_NODE)
        wait_for(lambda: metrics.get("chain") == "ok", timeout=START_SECONDS,
                 what="the bridge to reconnect to the restarted RPC node")
        # 700 trades at 100 a second, buffered while Redis was down.
        wait_for(producer.done.is_set, timeout=START_SECONDS,
                 what="the producer to publish everything")
        wait_for(lambda: producer.publisher.pending() == 0, timeout=NOTICE_SECONDS,
                 what="the plug-in to deliver its buffer")
        try:
            wait_for_work(chain, lambda: metrics.get("settled") >= len(lines)
                          and group_pending(redis_url) == 0, progress=progress,
                          what=f"all {len(lines)} trades settled and acknowledged")
        except ChainError as error:
            heads = {name: chain.block_number(name) for name in ("validator1", RPC_NODE)}
            raise AssertionError(f"{error} Heads: {heads}. Bridge: {metrics.snapshot()}"
                                 ) from None

    on_chain = settled_on_chain(deployed)
    assert duplicates(on_chain) == {}
    assert {record.trade_id for record in on_chain} == input_ids(lines)


def test_entries_whose_delivery_reply_was_lost_are_still_settled(
        deployed: Deployed, redis_url: str) -> None:
    """Redis can run an XREADGROUP whose reply never reaches the bridge (Redis going away
    mid-command): the entries sit in the bridge's pending list and ``>`` never delivers them
    again. Produced for real: the same read, under the bridge's consumer name, by another
    client, atomically with the appends so that the bridge cannot read them first."""
    lines = synthesise(40, seed=13)
    settings = bridge_settings(deployed, redis_url)
    client = redis.Redis.from_url(redis_url)
    try:
        with BridgeThread(settings) as metrics:
            wait_for(lambda: metrics.get("state") == "running", timeout=START_SECONDS,
                     what="the bridge to be running")
            pipe = client.pipeline(transaction=True)
            for line in lines:
                pipe.xadd(STREAM, {"event": line})
            pipe.xreadgroup(settings.group, settings.consumer, {STREAM: ">"}, count=len(lines))
            delivered = pipe.execute()[-1]
            assert len(delivered[0][1]) == len(lines)
            wait_for_work(deployed.net, lambda: metrics.get("settled") >= len(lines)
                          and group_pending(redis_url) == 0,
                          progress=work_progress(metrics, lambda: group_pending(redis_url)),
                          what=f"the {len(lines)} entries delivered elsewhere to be settled and "
                               "acknowledged")
            assert metrics.get("received") == len(lines)
    finally:
        client.close()
    on_chain = settled_on_chain(deployed)
    assert duplicates(on_chain) == {}
    assert {record.trade_id for record in on_chain} == input_ids(lines)
