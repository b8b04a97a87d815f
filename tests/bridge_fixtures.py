"""Fixtures and helpers of the bridge tests: a fresh Settlement per test, the bridge in a
thread or as a real process, stream publishing, and reading the settled trades back.

Loaded as a pytest plug-in by conftest.py, like faucet_fixtures: test modules request the
``deployed`` fixture by name and import only helpers from here.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import requests
from hexbytes import HexBytes
from recordings import RECORDINGS
from web3 import Web3
from web3.contract import Contract
from web3.types import TxParams, TxReceipt

from bridge.config import BridgeSettings, StreamSettings
from bridge.events import EVENT_FIELD
from bridge.pipeline import Bridge
from pilotchain.chain import Sender, connect, receipt_within
from pilotchain.contract import (
    Deployment,
    compile_settlement,
    deploy_settlement,
    load_deployment,
    save_deployment,
)
from pilotchain.settings import PROJECT_ROOT
from pilotchain.trades import TRADE_SETTLED_TOPIC, TradeRecord, decode_trade_settled_logs
from runner.localnet import MINED_WITHIN, LocalNetwork
from runner.ports import free_port
from runner.processes import log_tail
from worker.metrics import Metrics

STREAM = "test:trades"
# Every test network seals a block a second (conftest.network_settings).
PERIOD = 1
# Waits on a service's work that goes on chain count the blocks in which it got no further
# (tests/README.md): a batch takes a block, and a restarted bridge first waits up to its
# recovery_timeout (30 s here) for the receipts of what it had in flight. Sixty 1 s blocks
# of standing still is stuck, on a loaded machine too.
STALL_BLOCKS = 60
STALL_WHY = ("a batch takes a block, and a restarted bridge waits up to its 30 s "
             "recovery_timeout for what it had in flight before it sends again")
# Seconds for a Python service (or geth) to start and answer on a loaded two-core machine:
# imports and connections take a few seconds on a quiet one.
START_SECONDS = 120
# Seconds for a service to notice something that is not the chain (Redis gone or back, a
# reply lost): it retries every second or two; a loaded machine stretches that a little.
NOTICE_SECONDS = 60

T = TypeVar("T")

__all__ = [
    "NOTICE_SECONDS", "PERIOD", "STALL_BLOCKS", "STALL_WHY", "START_SECONDS", "STREAM",
    "BridgeProcess", "BridgeThread", "Deployed", "ServiceProcess", "ServiceThread",
    "bridge_env", "bridge_settings", "deploy", "deployed", "duplicates", "mined",
    "mined_all", "publish_lines", "read_lines", "send", "send_calls", "send_data",
    "settled_on_chain", "synthesise", "wait_for_work", "work_progress",
]


@dataclass(frozen=True)
class Deployed:
    """A Settlement contract deployed for one test, on the session's chain."""

    net: LocalNetwork
    record: Path
    deployment: Deployment


def deploy(net: LocalNetwork, home: Path) -> Deployed:
    """A fresh Settlement on ``net`` (operator admin, the bridge key as recorder), its
    record written under ``home``."""
    w3 = connect(net.rpc_url)
    deployment = deploy_settlement(w3, net.keys.role("operator").unlock(),
                                   net.keys.role("bridge").address,
                                   compiled=compile_settlement())
    record = home / "settlement.json"
    save_deployment(deployment, record)
    return Deployed(net, record, load_deployment(record))


@pytest.fixture
def deployed(chain: LocalNetwork, tmp_path: Path) -> Deployed:
    """A fresh Settlement on the session's chain and its record."""
    return deploy(chain, tmp_path)


def bridge_settings(target: Deployed, redis_url: str, **overrides: Any) -> BridgeSettings:
    """Settings for a bridge on ``target``'s chain and contract, metrics on a free port."""
    chain = replace(target.net.settings, rpc_url_override=target.net.rpc_url,
                    deployment_file_override=target.record)
    base = BridgeSettings(chain=chain, streams=StreamSettings(redis_url, STREAM),
                          metrics_port=free_port(), log_interval=2.0, backoff_max=1.0,
                          recovery_timeout=30.0)
    return replace(base, **overrides)


def bridge_env(settings: BridgeSettings) -> dict[str, str]:
    """The environment that makes ``python -m bridge`` use ``settings``."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"), "PYTHONPATH": str(PROJECT_ROOT),
            **settings.to_env()}


class ServiceThread:
    """A service's loop in a thread of the test process; stopped (and re-raised) on exit.
    ``make(metrics, stop)`` builds the loop (a Bridge, an Ingest)."""

    def __init__(self, name: str, make: Callable[[Metrics, threading.Event], Any]) -> None:
        self.name = name
        self.metrics = Metrics()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.loop = make(self.metrics, self.stop)
        self.thread = threading.Thread(target=self._run, name=f"{name}-under-test")

    def _run(self) -> None:
        try:
            self.loop.run()
        except BaseException as error:
            self.error = error

    def __enter__(self) -> Metrics:
        self.thread.start()
        return self.metrics

    def __exit__(self, kind: object, value: BaseException | None, tb: object) -> None:
        self.stop.set()
        self.thread.join(timeout=START_SECONDS)
        assert not self.thread.is_alive(), \
            f"the {self.name} thread did not stop within {START_SECONDS} s"
        if self.error is None:
            return
        if value is not None:  # the test failed, maybe because the service died: say so
            value.add_note(f"The {self.name} thread had died with: {self.error!r}")
            return
        raise self.error


class BridgeThread(ServiceThread):
    """The bridge in a thread of the test process."""

    def __init__(self, settings: BridgeSettings) -> None:
        super().__init__("bridge", lambda metrics, stop: Bridge(settings, metrics, stop))


class ServiceProcess:
    """A service's ``python -m <module>`` as a real process (to be killed with SIGKILL),
    logging to a file; subclasses say which module and with what environment."""

    module = ""

    def __init__(self, settings: Any, log_file: Path) -> None:
        self.settings = settings
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def start(self) -> None:
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module], env=self.env(),
                stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)

    def metrics(self) -> dict[str, Any] | None:
        try:
            return requests.get(f"{self.settings.metrics_url}/status", timeout=10).json()
        except requests.RequestException:
            return None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no clean-up of any kind."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=60)

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL if it does not stop in a minute (it takes a second or
        two on a quiet machine)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_file, lines)


class BridgeProcess(ServiceProcess):
    """``python -m bridge`` as a real process."""

    module = "bridge"

    def env(self) -> dict[str, str]:
        return bridge_env(self.settings)


def read_lines(paths: Sequence[Path] = RECORDINGS) -> list[str]:
    """The event lines of recordings, in file order."""
    return [line for path in paths for line in path.read_text().splitlines() if line.strip()]


def publish_lines(redis_url: str, lines: Sequence[str], stream: str = STREAM) -> list[str]:
    """Append event lines as the plug-in does; returns the entry ids."""
    client = redis.Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for line in lines:
            pipe.xadd(stream, {EVENT_FIELD: line})
        return [entry_id.decode() for entry_id in pipe.execute()]
    finally:
        client.close()


def synthesise(count: int, seed: int) -> list[str]:
    """``count`` events drawn from the recordings, each with a fresh trade id."""
    rng = random.Random(seed)
    pool = read_lines()
    lines = []
    for _ in range(count):
        event = json.loads(rng.choice(pool))
        event["trade"]["id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        lines.append(json.dumps(event))
    return lines


def settled_on_chain(target: Deployed) -> list[TradeRecord]:
    """Every TradeSettled record of ``target``'s contract, in chain order."""
    w3 = connect(target.net.rpc_url)
    logs = w3.eth.get_logs({"address": target.deployment.address,
                            "fromBlock": target.deployment.block_number, "toBlock": "latest",
                            "topics": [TRADE_SETTLED_TOPIC]})
    return decode_trade_settled_logs(logs)


def mined(w3: Web3, tx_hash: HexBytes | bytes, *, blocks: int = MINED_WITHIN) -> TxReceipt:
    """The receipt of ``tx_hash`` from ``w3``, a test network's node, within ``blocks`` blocks
    (a sent transaction goes into the next block, or one soon after when the pool is busy)."""
    return receipt_within(w3, HexBytes(tx_hash), blocks=blocks, period=PERIOD)


def mined_all(w3: Web3, sent: Sequence[tuple[str, HexBytes | bytes]]) -> list[TxReceipt]:
    """The receipts of transactions sent back to back, each ``(what, tx hash)``, in order;
    each must have succeeded (``what`` names it if not). One waits for all: a sender's
    transactions go into the chain in nonce order, a few to a block when many, so the last
    gets a block more per transaction before it counts as lost."""
    receipts = [mined(w3, tx_hash, blocks=MINED_WITHIN + len(sent)) for _, tx_hash in sent]
    for (what, _), receipt in zip(sent, receipts, strict=True):
        assert receipt["status"] == 1, f"{what} failed on chain"
    return receipts


def send_data(w3: Web3, sender: Sender, to: str, *calls: tuple[str, bytes | str]
              ) -> list[TxReceipt]:
    """Each call, ``(name, calldata)``, sent to ``to`` from ``sender`` without waiting (its
    nonces keep their order on chain), then all mined and successful; their receipts.

    The node estimates gas on its latest block, which holds none of the calls sent before
    in the batch: a later call's estimate could revert (a reading of a meter registered
    just before) or come out too low (a slot closed with readings the estimate did not
    see). So every call after the first may use half a block's gas; it pays only for
    what it uses.

    Only one sender's calls have an order: a call that needs another sender's transaction
    (closing a slot after the bridge recorded its trade) goes after that one's receipt."""
    half_a_block = w3.eth.get_block("latest")["gasLimit"] // 2 if len(calls) > 1 else 0
    sent = []
    for index, (name, data) in enumerate(calls):
        tx: TxParams = {"to": to, "data": data}
        if index:
            tx["gas"] = half_a_block
        sent.append((name, sender.send(tx)))
    return mined_all(w3, sent)


def send_calls(w3: Web3, sender: Sender, contract: Contract, *calls: tuple[Any, ...]
               ) -> list[TxReceipt]:
    """Contract calls, each ``(function name, *arguments)``, as :func:`send_data` sends
    them: back to back from ``sender``, then all awaited; their receipts."""
    return send_data(w3, sender, contract.address,
                     *((name, contract.encode_abi(name, args=list(args)))
                       for name, *args in calls))


def send(w3: Web3, sender: Sender, contract: Contract, name: str, *args: Any) -> TxReceipt:
    """One contract call from ``sender``, mined and successful; its receipt."""
    return send_calls(w3, sender, contract, (name, *args))[0]


def wait_for_work(net: LocalNetwork, condition: Callable[[], T | None], *,
                  progress: Callable[[], object], what: str, blocks: int = STALL_BLOCKS,
                  why: str = STALL_WHY) -> T:
    """Wait for ``condition`` while a service's work moves the chain on: fail once ``net``'s
    chain went ``blocks`` blocks without ``progress`` (a reading of that work) changing, or
    halted."""
    return net.wait_for_blocks(condition, blocks=blocks, what=what, why=why, progress=progress)


def work_progress(metrics: Metrics | Callable[[], dict[str, Any] | None],
                    *extra: Callable[[], object]) -> Callable[[], object]:
    """How far a bridge or an ingest got, from its metrics (a thread's, or a process's
    endpoint): what it received, settled and dead-lettered, and ``extra`` readings (such as
    the stream's pending count)."""
    names = ("received", "settled", "dead_lettered", "already_recorded")

    def read() -> object:
        if isinstance(metrics, Metrics):
            counts = tuple(metrics.get(name) for name in names)
        else:
            reply = metrics() or {}
            counts = tuple(reply.get(name) for name in names)
        return counts + tuple(reading() for reading in extra)

    return read


def duplicates(records: Sequence[TradeRecord]) -> dict[uuid.UUID, int]:
    """Trade ids recorded more than once (the contract must make this empty)."""
    return {tid: n for tid, n in Counter(r.trade_id for r in records).items() if n > 1}

