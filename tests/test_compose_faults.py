"""Faults of the Compose stack on a real Docker engine: what it survives.

A stack of its own (the faults leave traces, such as a killed geth's rewind, that the stop/start
test of tests/test_compose_engine.py must not see), on a fresh clone as a user runs it, in order:
(a) ``docker kill`` of one validator: the other two keep sealing, and started again it catches
up with the RPC node; (b) a validator cut off its network for 60 s with ``docker network
disconnect`` and reconnected: every node ends on one chain, the reconnected one has peers and
seals again; (c) the bridge container SIGKILLed while it settles a replay of 2,000 trades and
started again: every trade on chain exactly once. Each node is read through its own IPC socket
(``docker compose exec -T <node> geth attach``), the RPC node also through its published port.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from bridge_fixtures import synthesise
from compose_fixtures import (
    ComposeFailure,
    ComposeProject,
    Timings,
    clone_head,
    replay_into,
    run,
)
from web3 import Web3

from pilotchain.chain import connect, wait_for
from pilotchain.contract import Deployment, load_deployment
from pilotchain.trades import TRADE_SETTLED_TOPIC, decode_trade_settled_logs

pytestmark = [pytest.mark.compose, pytest.mark.slow]

OWNER_UID = 4321
ONE_SHOT = ("init", "deploy")
LONG_RUNNING = ("bootnode", "validator1", "validator2", "validator3", "rpc-node", "redis",
                "bridge", "faucet")
SERVICES = (*ONE_SHOT, *LONG_RUNNING)
SIGNERS = ("validator1", "validator2", "validator3")
NODES = (*SIGNERS, "rpc-node")
SETTINGS = {"BLOCK_PERIOD": "2"}
UP_TIMEOUT = 900  # a cold run builds the app image inside `up`
# Longer than geth's 30 s frame read timeout (p2p/rlpx), so every peer drops the cut-off node.
PARTITION_SECONDS = 60
REJOIN_TIMEOUT = 120
TRADES = 2000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, local_images: dict[str, str],
          timings: Timings) -> Iterator[ComposeProject]:
    """A healthy stack on a fresh clone; always taken down, leaving nothing."""
    checkout = clone_head(tmp_path_factory.mktemp("compose-faults") / "pilotchain", OWNER_UID)
    project = ComposeProject(checkout, local_images, SETTINGS)
    try:
        with timings.measure("faults: up -d until healthy"):
            project.compose("up", "-d", "--build", *SERVICES, timeout=UP_TIMEOUT)
            project.wait_until_up(LONG_RUNNING, ONE_SHOT, timeout=300)
        yield project
    finally:
        with timings.measure("faults: down -v"):
            project.down()


@pytest.fixture(scope="module")
def w3(stack: ComposeProject) -> Web3:
    return connect(stack.url("RPC_HTTP_PORT"))


def container_of(stack: ComposeProject, service: str) -> str:
    container = stack.compose("ps", "-a", "-q", service, timeout=60).stdout.strip()
    assert container, f"no container for {service}"
    return container


def geth_js(stack: ComposeProject, service: str, expression: str) -> Any:
    """Evaluate ``expression`` in the geth console of ``service`` (its IPC) as JSON."""
    output = stack.compose("exec", "-T", service, "geth", "attach", "--exec",
                           f"JSON.stringify({expression})", "/data/geth.ipc", timeout=60).stdout
    # The console prints the string it got back as a quoted JavaScript string.
    return json.loads(json.loads(output.strip().splitlines()[-1]))


class Views:
    """What every node says about block ``height``, kept for the timeout message."""

    def __init__(self, stack: ComposeProject, nodes: Sequence[str]) -> None:
        self.stack, self.nodes = stack, nodes
        self.last: dict[str, Any] = {}

    def read(self, height: int) -> dict[str, Any]:
        for node in self.nodes:
            try:
                self.last[node] = geth_js(
                    self.stack, node,
                    f"{{head: eth.blockNumber, peers: admin.peers.length, "
                    f"hash: (eth.getBlock({height}) || {{}}).hash || null}}")
            except (ComposeFailure, ValueError, IndexError) as error:
                self.last[node] = f"unreadable: {str(error).splitlines()[0]}"
        return self.last

    def peers(self, node: str) -> int | None:
        view = self.read(0)[node]
        return view["peers"] if isinstance(view, dict) else None

    def one_chain_at(self, height: int) -> bool:
        """Every node has block ``height`` and they agree on its hash."""
        views = self.read(height)
        hashes = {view["hash"] if isinstance(view, dict) else None for view in views.values()}
        return len(hashes) == 1 and None not in hashes

    def __str__(self) -> str:
        return "; ".join(f"{node}: {view}" for node, view in self.last.items())


def wait_for_one_chain(stack: ComposeProject, nodes: Sequence[str], height: int, *,
                       timeout: float, what: str) -> None:
    views = Views(stack, nodes)
    try:
        wait_for(lambda: views.one_chain_at(height), timeout=timeout, interval=1.0,
                 what=f"{what}: one block {height} on {', '.join(nodes)}")
    except Exception as error:
        raise AssertionError(f"{error}\nLast seen: {views}") from None


def signer_address(stack: ComposeProject, service: str) -> str:
    return Web3.to_checksum_address(
        (stack.directory / "keys" / service / "address").read_text().strip())


def sealer_of(w3: Web3, number: int) -> str:
    return Web3.to_checksum_address(
        w3.provider.make_request("clique_getSigner", [hex(number)])["result"])


def wait_until_sealed_by(w3: Web3, address: str, after: int, *, timeout: float,
                         what: str) -> int:
    """The first block above ``after`` that ``address`` sealed."""
    checked = after

    def sealed() -> int | None:
        nonlocal checked
        while checked < w3.eth.block_number:
            checked += 1
            if sealer_of(w3, checked) == address:
                return checked
        return None

    return wait_for(sealed, timeout=timeout, what=what)


def docker(*args: str, timeout: float = 120) -> None:
    run(["docker", *args], timeout=timeout)


def test_a_killed_validator_leaves_two_sealing_and_catches_up(
        stack: ComposeProject, w3: Web3, timings: Timings) -> None:
    victim = "validator2"
    victim_address = signer_address(stack, victim)
    with timings.measure("faults a: docker kill validator2, 6 blocks by the others"):
        docker("kill", container_of(stack, victim))
        killed_at = w3.eth.block_number
        # The block being sealed at the kill may still be the victim's; the next six are not.
        wait_for(lambda: w3.eth.block_number >= killed_at + 7, timeout=60,
                 what=f"six blocks after {killed_at + 1} with {victim} killed")
        sealers = {sealer_of(w3, number) for number in range(killed_at + 2, killed_at + 8)}
        assert victim_address not in sealers, f"{victim} sealed while killed"
        assert len(sealers) == 2, f"blocks after the kill sealed by {sealers}"
    with timings.measure("faults a: validator2 started, catches up"):
        stack.compose("start", victim, timeout=120)
        target = w3.eth.block_number + 2
        wait_for_one_chain(stack, (victim, "rpc-node"), target, timeout=120,
                           what=f"{victim} to catch up after its restart")
        wait_until_sealed_by(w3, victim_address, target, timeout=60,
                             what=f"a block sealed by {victim} after its restart")


def test_b_a_partitioned_validator_rejoins_one_chain(
        stack: ComposeProject, w3: Web3, timings: Timings) -> None:
    victim = "validator3"
    container = container_of(stack, victim)
    network = f"{stack.name}_chain"
    views = Views(stack, (victim,))
    with timings.measure("faults b: validator3 cut off for 60 s"):
        docker("network", "disconnect", network, container)
        cut_at = time.monotonic()
        try:
            cut_head = w3.eth.block_number
            wait_for(lambda: views.peers(victim) == 0, timeout=PARTITION_SECONDS, interval=2.0,
                     what=f"{victim} to lose its peers once cut off")
            wait_for(lambda: w3.eth.block_number >= cut_head + 5, timeout=PARTITION_SECONDS,
                     what="the two connected signers to go on sealing")
            # The length of the fault, not a synchronisation: the partition lasts 60 s.
            time.sleep(max(0.0, PARTITION_SECONDS - (time.monotonic() - cut_at)))
        finally:
            # As an operator would: by name, with the service's DNS alias, no fixed address.
            docker("network", "connect", "--alias", victim, network, container)
    with timings.measure("faults b: validator3 back on the one chain"):
        target = w3.eth.block_number + 2
        wait_for_one_chain(stack, NODES, target, timeout=REJOIN_TIMEOUT,
                           what=f"{victim} to rejoin after {PARTITION_SECONDS} s cut off")
        assert views.peers(victim), f"{victim} has no peers: {views}"
        wait_until_sealed_by(w3, signer_address(stack, victim), target, timeout=60,
                             what=f"a block sealed by {victim} after it rejoined")


def settled_ids(w3: Web3, deployment: Deployment) -> list[str]:
    logs = w3.eth.get_logs({"address": deployment.address, "fromBlock": deployment.block_number,
                            "toBlock": "latest", "topics": [TRADE_SETTLED_TOPIC]})
    return [str(record.trade_id) for record in decode_trade_settled_logs(logs)]


def test_c_the_bridge_killed_mid_replay_settles_every_trade_once(
        stack: ComposeProject, w3: Web3, timings: Timings) -> None:
    deployment = load_deployment(stack.directory / "data" / "compose" / "settlement.json")
    lines = synthesise(TRADES, seed=11)
    trade_ids = {json.loads(line)["trade"]["id"] for line in lines}
    assert len(trade_ids) == TRADES
    replay = stack.directory / "data" / "faults" / "trades.jsonl"
    replay.parent.mkdir(parents=True, exist_ok=True)
    replay.write_text("\n".join(lines) + "\n")
    replay.chmod(0o644)
    count: Callable[[], int] = lambda: len(settled_ids(w3, deployment))  # noqa: E731
    with timings.measure(f"faults c: replay {TRADES}, kill the bridge mid-way"):
        replay_into(stack, replay)
        settled_before_kill = wait_for(count, timeout=120, interval=0.1,
                                       what="the bridge to settle its first trades")
        docker("kill", container_of(stack, "bridge"))
        at_kill = count()
        assert at_kill < TRADES, (
            f"all {TRADES} trades were settled before the kill ({settled_before_kill} seen at "
            f"first): the kill tested nothing")
    with timings.measure("faults c: bridge started again, every trade settled"):
        stack.compose("start", "bridge", timeout=120)
        wait_for(lambda: count() >= TRADES, timeout=300, interval=1.0,
                 what=f"{TRADES} trades settled after the restart ({at_kill} before the kill)")
    on_chain = Counter(settled_ids(w3, deployment))
    twice = {trade_id: n for trade_id, n in on_chain.items() if n > 1}
    assert not twice, f"settled more than once: {twice}"
    assert set(on_chain) == trade_ids, (
        f"missing {len(trade_ids - set(on_chain))}, unknown {len(set(on_chain) - trade_ids)}")
