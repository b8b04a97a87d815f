"""Several organisations' hosts in Compose (docker-compose.hosts.yml) on a real engine, run as
the last tests of tests/test_compose_engine.py (which imports them): the Docker engine's tests
are one module, so that parallel workers never run two of them side by side. Each
organisation a Compose project of its own, with only its own directory (keys, genesis, the
signed manifest), every node on a shared "wan" network at the fixed address its export gives.

(hosts a) Three organisations found the network: a tampered manifest stops a node's check service
with one sentence and no node; the bootnodes of two organisations and three validators start
from the manifest and seal in turn. (hosts b) A fourth joins: its keys, the manifest's next version,
the founders' validators recreated one at a time to take it (a new partner network for
``--netrestrict``), its node syncs, two of three vote it in over their own IPC, and it seals.
(hosts c) On the same network, uni-a adds its apps (``--profile rpc --profile tls --profile
apps``): they deploy the Settlement on uni-a's own RPC node, a trade published to the bridge's
stream settles, and participants reach that node over HTTPS with the test CA (plain HTTP and an
untrusted client refused; geth's own HTTP and WebSocket not served at the node's wan address).
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bridge_fixtures import synthesise
from compose_fixtures import LOOPBACK, ComposeFailure, run, unused_subnet_prefix
from conftest import SMALL_GETH_CACHE_MB
from test_hosts import CLIENT, make_certificates
from web3 import Web3
from web3.middleware import ExtraDataToPOAMiddleware

from pilotchain.chain import connect, wait_for, wait_for_blocks
from pilotchain.contract import load_deployment
from pilotchain.settings import PROJECT_ROOT
from pilotchain.trades import TRADE_SETTLED_TOPIC, decode_trade_settled_logs
from runner.ports import free_port

PILOTCHAIN = str(Path(sys.executable).parent / "pilotchain")
COMPOSE_FILE = PROJECT_ROOT / "docker-compose.hosts.yml"
PERIOD = 1
START_IN = 40  # block 1 may be sealed this long after the founding
ROUNDS = 12  # a vote or a signer's turn shows within a few rounds of four signers
# Each organisation's roles and the last octet of each node's address on the wan network.
ORGS: dict[str, dict[str, int]] = {
    "uni-a": {"bootnode": 5, "validator": 10, "rpc": 30},
    "uni-b": {"bootnode": 6, "validator": 11},
    "uni-c": {"validator": 12},
    "uni-d": {"validator": 13},
}
FOUNDERS = ("uni-a", "uni-b", "uni-c")
# Profiles beyond the node roles: uni-a's RPC node has its HTTPS proxy from the start.
EXTRA_PROFILES = {"uni-a": ["tls"]}
# The apps' published ports (docker-compose.yml's), each a free one on loopback.
APPS_PORTS = ("BRIDGE_METRICS_PORT", "FAUCET_PORT", "MQTT_PORT", "INGEST_HTTP_PORT",
              "PORTAL_PORT")


@dataclass
class Org:
    """One organisation's host: its directory and its Compose project."""

    name: str
    home: Path
    prefix: str
    wan: str
    images: dict[str, str]
    project: str = field(default_factory=lambda: f"pc-hosts-{secrets.token_hex(3)}")
    env: dict[str, str] = field(default_factory=dict)
    profiles: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.profiles = [*ORGS[self.name], *EXTRA_PROFILES.get(self.name, [])]

    def ip(self, role: str) -> str:
        return f"{self.prefix}.{ORGS[self.name][role]}"

    def settings(self) -> dict[str, str]:
        base = {key: value for key, value in os.environ.items()
                if not key.startswith(("PYTEST", "COV_"))}
        return {**base, **self.images, "KEYS_DIR": str(self.home / "keys"),
                "GENESIS_FILE": str(self.home / "genesis.json"),
                "NETWORK_MANIFEST": str(self.home / "network.json"),
                "NATIVE_DATA_DIR": str(self.home / "data"), "HOST_DIR": str(self.home),
                "WAN_NETWORK": self.wan, "DOCKER_BUILDKIT": "0", "COMPOSE_BAKE": "false",
                "GETH_CACHE_MB": SMALL_GETH_CACHE_MB,
                **{f"{role.upper()}_IP": self.ip(role) for role in ORGS[self.name]},
                **self.env}

    def pilotchain(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The organisation's own ``pilotchain`` (keys, votes), on its host."""
        result = subprocess.run([PILOTCHAIN, *args], capture_output=True, text=True,
                                timeout=120, env=self.settings(), check=False)
        if check and result.returncode:
            raise AssertionError(f"{self.name}: pilotchain {' '.join(args)}: {result.stderr}")
        return result

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        profiles = [arg for role in self.profiles for arg in ("--profile", role)]
        return run(["docker", "compose", "-p", self.project, "-f", str(COMPOSE_FILE),
                    *profiles, *args], timeout=600, env=self.settings(), cwd=PROJECT_ROOT,
                   check=check)

    def ipc(self) -> str:
        return str(self.home / "data" / "nodes" / "validator" / "geth.ipc")

    def w3(self) -> Web3:
        return connect(self.ipc(), timeout=30)


@dataclass
class Net:
    coordinator: Path
    orgs: dict[str, Org]
    signers: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def net(docker_engine: None, local_images: dict[str, str],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    """The wan network and one project per organisation; all of it removed at the end, also
    after a failure."""
    home = tmp_path_factory.mktemp("compose-hosts")
    prefix = unused_subnet_prefix()
    wan = f"pc-wan-{secrets.token_hex(3)}"
    run(["docker", "network", "create", "--subnet", f"{prefix}.0/24", wan], timeout=60)
    images = {name: local_images[name] for name in ("GETH_IMAGE", "PYTHON_IMAGE", "REDIS_IMAGE",
                                                     "MOSQUITTO_IMAGE", "RPC_PROXY_IMAGE")}
    orgs = {name: Org(name, home / name, prefix, wan, images) for name in ORGS}
    for org in orgs.values():
        org.home.mkdir()
    # uni-a's RPC node: its certificate (from a test CA) under its host directory, for the
    # address participants reach it at.
    a = orgs["uni-a"]
    make_certificates(a.home / "tls", a.ip("rpc"))
    a.env.update({"RPC_TLS_CERT_FILE": str(a.home / "tls" / "rpc.pem"),
                  "RPC_TLS_KEY_FILE": str(a.home / "tls" / "rpc.key"),
                  **{variable: str(free_port()) for variable in APPS_PORTS},
                  "PUBLISH_ADDR": LOOPBACK})
    coordinator = home / "coordinator"
    coordinator.mkdir()
    try:
        yield Net(coordinator, orgs)
    finally:
        for org in orgs.values():
            org.compose("down", "-v", "--remove-orphans", "--timeout", "120", check=False)
        run(["docker", "network", "rm", wan], timeout=60, check=False)
        left = [container for org in orgs.values() for container in run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={org.project}"],
            timeout=60, check=False).stdout.split()]
        assert left == [], f"containers left behind: {left}"


def coordinator_env(net: Net) -> dict[str, str]:
    base = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
    return {**base, "KEYS_DIR": str(net.coordinator / "keys"), "BLOCK_PERIOD": str(PERIOD),
            "GENESIS_FILE": str(net.coordinator / "genesis.json"),
            "NETWORK_MANIFEST": str(net.coordinator / "network.json")}


def coordinate(net: Net, *args: str) -> str:
    result = subprocess.run([PILOTCHAIN, *args], capture_output=True, text=True, timeout=120,
                            env=coordinator_env(net), check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def exports_of(org: Org) -> list[Path]:
    """``keys new`` for each of the organisation's roles; the exports leave the host."""
    files = []
    for role in ORGS[org.name]:
        out = org.home / f"{role}.export.json"
        org.pilotchain("keys", "new", "--role", role, "--org", org.name, "--public-ip",
                       org.ip(role), "--out", str(out))
        files.append(out)
    return files


def distribute(net: Net, names: list[str]) -> None:
    for name in names:
        for file in ("genesis.json", "network.json"):
            shutil.copy(net.coordinator / file, net.orgs[name].home / file)


def signer_of(w3: Web3, number: int) -> str:
    return Web3.to_checksum_address(w3.manager.request_blocking("clique_getSigner",
                                                                [hex(number)]))


def signers(w3: Web3) -> set[str]:
    return {Web3.to_checksum_address(s)
            for s in w3.manager.request_blocking("clique_getSigners", [])}


def within(w3: Web3, blocks: int, condition: Any, what: str, why: str,
           progress: Any = None) -> Any:
    return wait_for_blocks(condition, w3=w3, blocks=blocks, period=PERIOD, what=what, why=why,
                           progress=progress)


def test_hosts_a_three_organisations_found_the_network_in_compose(net: Net) -> None:
    coordinate(net, "keys", "new", "--role", "coordinator", "--org", "uni-a", "--out",
               str(net.coordinator / "coordinator.json"))
    signer = json.loads((net.coordinator / "coordinator.json").read_text())["address"]
    exports = [path for name in FOUNDERS for path in exports_of(net.orgs[name])]
    # The grid operator's apps accounts, funded in genesis (the apps themselves are not run).
    apps = net.orgs["uni-a"].home / "apps.export.json"
    net.orgs["uni-a"].pilotchain("keys", "new", "--role", "apps", "--org", "uni-a", "--out",
                                 str(apps))
    exports.append(apps)
    coordinate(net, "network", "found", "--start-in", str(START_IN), *map(str, exports))
    for org in net.orgs.values():
        org.env["MANIFEST_SIGNER"] = signer
    for name in FOUNDERS:
        net.signers[name] = (net.orgs[name].home / "keys" / "validator" / "address"
                             ).read_text().strip()
    distribute(net, [*FOUNDERS, "uni-d"])

    # A tampered manifest: uni-d's check service refuses in one sentence; no node runs.
    d = net.orgs["uni-d"]
    exports_of(d)
    manifest = json.loads((d.home / "network.json").read_text())
    (d.home / "network.json").write_text(json.dumps(dict(manifest, block_period=2)))
    with pytest.raises(ComposeFailure):
        d.compose("up", "-d")
    said = d.compose("logs", "--no-log-prefix", "validator-check").stdout.strip()
    assert said.endswith("(MANIFEST_SIGNER): it was changed after signing or signed by another "
                         "key; ask the coordinator for the signed file."), said
    assert "is not signed by the coordinator" in said and "Traceback" not in said
    assert not (d.home / "data" / "nodes" / "validator").exists()
    d.compose("down", "-v", "--remove-orphans")

    for name in FOUNDERS:
        net.orgs[name].compose("up", "-d")
    a = net.orgs["uni-a"]
    wait_for(lambda: Path(a.ipc()).exists(), timeout=120, what="uni-a's validator to start")
    w3 = a.w3()
    founders = set(net.signers.values())

    def all_in_turn() -> list[str] | None:
        top = w3.eth.block_number
        sealers = [signer_of(w3, n) for n in range(max(1, top - 8), top + 1)]
        return sealers if len(sealers) == 9 and set(sealers) == founders else None

    # A validator whose container starts late on a busy host syncs first; the others seal
    # out of turn meanwhile. Then each takes its turns: all three among any nine blocks.
    sealers = within(w3, 6 * ROUNDS, all_in_turn, "each founder among the last nine sealers",
                     f"a late validator syncs and takes its turn within {6 * ROUNDS} blocks "
                     "of the first")
    assert all(x != y for x, y in itertools.pairwise(sealers))  # Clique: never twice running


def test_hosts_b_a_fourth_organisation_joins_by_vote_in_compose(net: Net) -> None:
    a, b, d = net.orgs["uni-a"], net.orgs["uni-b"], net.orgs["uni-d"]
    coordinate(net, "network", "update", "--add", str(d.home / "validator.export.json"))
    distribute(net, [*FOUNDERS, "uni-d"])
    net.signers["uni-d"] = (d.home / "keys" / "validator" / "address").read_text().strip()
    # Each founder's validator takes the new manifest with a clean restart, one at a time, each
    # back in the chain (watched from another organisation's node) before the next goes.
    for name in FOUNDERS:
        org = net.orgs[name]
        watch = net.orgs["uni-b" if name == "uni-a" else "uni-a"].w3()
        before = watch.eth.block_number
        org.compose("up", "-d", "--force-recreate", "validator-check", "validator")
        wait_for(lambda o=org: Path(o.ipc()).exists(), timeout=120,  # a process start
                 what=f"{name}'s validator to start again")
        view = org.w3()
        within(watch, 60, lambda v=view, b=before: v.eth.block_number > b + 1 and len(
            v.manager.request_blocking("admin_peers", [])) >= 2,
               f"{name}'s validator back in the chain",
               "it dials its static peers at start and syncs the few blocks it missed")
    w3 = a.w3()
    d.compose("up", "-d")
    wait_for(lambda: Path(d.ipc()).exists(), timeout=120, what="uni-d's validator to start")
    dw = d.w3()
    within(w3, 60, lambda: dw.eth.block_number >= w3.eth.block_number - 2, "uni-d to sync",
           "a few hundred blocks sync in seconds", progress=lambda: dw.eth.block_number)
    newcomer = net.signers["uni-d"]
    for org in (a, b):  # two of three, each against its own validator
        org.pilotchain("propose", newcomer, "--add", "--ipc", org.ipc())
    within(w3, ROUNDS, lambda: newcomer in signers(w3), "uni-d voted in",
           "each voter seals at least once in three blocks")
    voted_at = w3.eth.block_number
    within(w3, ROUNDS, lambda: any(signer_of(w3, n) == newcomer
                                   for n in range(voted_at + 1, w3.eth.block_number + 1)),
           "uni-d to seal", "a signer's turn comes every four blocks")


def test_hosts_c_an_organisation_s_apps_settle_on_its_own_rpc_node_in_compose(net: Net) -> None:
    a = net.orgs["uni-a"]
    # The test reaches uni-a's RPC node as a participant does: over HTTPS at its address on the
    # wan network, trusting the test CA. It publishes no port on the host.
    https = f"https://{a.ip('rpc')}:8443"
    rpc = Web3(Web3.HTTPProvider(https, request_kwargs={
        "timeout": 30, "verify": str(a.home / "tls" / "ca.pem")}))
    rpc.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)  # Clique's extraData
    validator = a.w3()
    within(validator, 30, lambda: rpc.eth.block_number >= validator.eth.block_number - 2,
           "uni-a's RPC node to follow", "it has peered with the validators since test a",
           progress=lambda: rpc.eth.block_number)
    # geth's own plain HTTP and WebSocket listen on the internal network only: at the node's
    # wan address, where partners and participants are, nothing answers.
    for port in (8545, 8546):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((a.ip("rpc"), port), timeout=10).close()
    # Participants: over HTTPS at the node's address with the test CA; plain HTTP sent to that
    # port gets nginx's 400; a client without the CA does not trust it.
    client = subprocess.run(
        [sys.executable, "-c", CLIENT, https, f"http://{a.ip('rpc')}:8443"], capture_output=True,
        text=True, timeout=120, check=True,
        env={**a.settings(), "REQUESTS_CA_BUNDLE": str(a.home / "tls" / "ca.pem")})
    said = json.loads(client.stdout)
    assert said["chain_id"] == 8765 and said["head"] > 0, said
    assert said["plain"] == 400 and said["untrusted"] == "refused", said

    # The apps on uni-a's own RPC node: deployed, healthy, and a trade published to the
    # bridge's stream settles.
    a.profiles.append("apps")
    a.compose("up", "-d", "--wait", "--wait-timeout", "300")
    deployment = load_deployment(a.home / "data" / "settlement.json")
    assert rpc.eth.get_code(deployment.address), "no Settlement at the recorded address"
    trades = a.home / "trade.jsonl"
    trades.write_text(synthesise(1, seed=21)[0] + "\n")
    trade_id = json.loads(trades.read_text())["trade"]["id"]
    a.compose("exec", "-T", "bridge", "pilotchain", "replay", str(trades))

    def settled() -> list[str]:
        logs = rpc.eth.get_logs({"address": deployment.address,
                                 "fromBlock": deployment.block_number, "toBlock": "latest",
                                 "topics": [TRADE_SETTLED_TOPIC]})
        return [str(record.trade_id) for record in decode_trade_settled_logs(logs)]

    within(rpc, 30, lambda: settled() or None, "the trade settled on chain",
           "the bridge sends it within a second; it is in one of the next blocks")
    assert settled() == [trade_id]
