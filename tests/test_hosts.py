"""Several organisations on several hosts: each host a network namespace with its own keys.

One network for the module, the tests in order (each builds on the one before):

(a) three organisations make their keys on their own hosts and hand the coordinator only their
exports; it writes genesis.json and the signed network manifest, which travel to every host as
files; a tampered manifest, another chain's genesis and another chain id each stop a node from
starting with one sentence; bootnodes of two organisations, three validators and an RPC node
start from the manifest, each behind the nftables rules ``up`` generated, and the three sign in
turn. (b) uni-a's apps on its service host settle a recording through its own RPC node. (c) A
participant's host reaches that RPC node only over HTTPS (test CA), not over plain HTTP, and
reaches no validator's P2P port, which partners reach. (d) A fourth organisation joins: its
keys, the manifest's next version, its node syncs, two of the three signers vote it in
(``network status`` shows the vote pending between them) and it seals. (e) uni-c is voted out
by three of four, stops sealing, and leaves the manifest. (f) A validator host's cable is cut
for 60 s and plugged back: one canonical chain after, the same geth process and its data. (g)
A validator host moves to another address and rejoins after the coordinator's manifest update;
the others change their peers without a restart. (h) With a bootnode host down the network
keeps sealing and takes back a restarted validator.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hosts_fixtures import Host, Lan, in_parallel
from web3 import Web3

from pilotchain.chain import connect, head_of, wait_for_blocks, wait_until_chain_time
from pilotchain.contract import load_deployment
from pilotchain.genesis import read_genesis, write_genesis
from pilotchain.settings import PROJECT_ROOT
from pilotchain.trades import TRADE_SETTLED_TOPIC, decode_trade_settled_logs

pytestmark = [pytest.mark.chain, pytest.mark.slow]

RECORDING = PROJECT_ROOT / "tests" / "data" / "default_3_one_sided.jsonl"
CUT_SECONDS = 60  # longer than geth's 30 s frame read timeout: every peer drops the host
PERIOD = 1  # the network's block period (BLOCK_PERIOD at the coordinator)
# Deadlines in blocks, each with why it is enough. A signer's turn comes once per N blocks;
# with N signers it may seal at most once in floor(N/2)+1, so a vote, a new signer's first
# block or a signer's last one show within a few rounds of four.
ROUNDS = 12
# A node coming back (a restart, a cut cable) dials its static peers again: geth's dialer
# retries a static peer within about 30 s, then syncs the blocks it missed.
REJOIN = 90
# Which roles each host runs, its organisation and its address (10.201.<org>.0/24 per org).
HOSTS = {
    "a-boot": ("uni-a", "10.201.1.5", ("bootnode",)),
    "a-val": ("uni-a", "10.201.1.10", ("validator",)),
    "a-svc": ("uni-a", "10.201.1.30", ("rpc", "apps")),
    "b-boot": ("uni-b", "10.201.2.5", ("bootnode",)),
    "b-val": ("uni-b", "10.201.2.10", ("validator",)),
    "c-val": ("uni-c", "10.201.3.10", ("validator",)),
    "d-val": ("uni-d", "10.201.4.10", ("validator",)),
}
FOUNDERS = ("a-boot", "a-val", "a-svc", "b-boot", "b-val", "c-val")
RPC_TLS_PORT = 8443
# Block 1 may be sealed this long after the founding: the founders' validators start before.
START_IN = 45


@dataclass
class World:
    """The hosts, the coordinator's desk and what the tests learn on the way."""

    lan: Lan
    coordinator: Host
    client: Host
    hosts: dict[str, Host]
    ca: Path
    signers: dict[str, str] = field(default_factory=dict)  # host -> signer address
    running: list[str] = field(default_factory=list)
    apps: Future[str] | None = None  # uni-a's apps starting while the founders' chain starts

    def roles(self, name: str) -> tuple[str, ...]:
        return HOSTS[name][2]


def org_network(address: str) -> str:
    return address.rsplit(".", 1)[0] + ".0/24"


@pytest.fixture(scope="module")
def world(lan: Lan) -> Iterator[World]:
    coordinator = lan.add("coord", "10.201.1.2")
    hosts = {name: lan.add(name, address) for name, (_, address, _) in HOSTS.items()}
    client = lan.add("client", "10.201.9.9")  # a participant: no partner
    ca = make_certificates(lan.home / "tls", hosts["a-svc"].address)
    hosts["a-svc"].env.update(RPC_TLS_CERT_FILE=str(lan.home / "tls" / "rpc.pem"),
                              RPC_TLS_KEY_FILE=str(lan.home / "tls" / "rpc.key"),
                              RPC_TLS_PORT=str(RPC_TLS_PORT))
    coordinator.env["BLOCK_PERIOD"] = str(PERIOD)
    for host in hosts.values():  # the organisations trust the test CA, as they would theirs
        host.env["REQUESTS_CA_BUNDLE"] = str(ca)
    yield World(lan, coordinator, client, hosts, ca)


def make_certificates(directory: Path, address: str) -> Path:
    """A test CA and the RPC node's certificate for its address; returns the CA's."""
    directory.mkdir(parents=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True,
                       timeout=60)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj",
            "/CN=PilotChain test CA")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "rpc.key", "-out", "rpc.csr", "-subj", "/CN=rpc.uni-a.test")
    (directory / "san.ext").write_text(f"subjectAltName=IP:{address},DNS:rpc.uni-a.test\n")
    openssl("x509", "-req", "-in", "rpc.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "rpc.pem", "-days", "2", "-extfile", "san.ext")
    return directory / "ca.pem"


# -- what the organisations and the coordinator do ---------------------------------------------

def keys_new(host: Host, role: str, *extra: str) -> Path:
    """``keys new`` on the organisation's host; the export is the one file that leaves it."""
    org, address, _ = HOSTS.get(host.name, ("uni-a", host.address, ()))
    out = host.home / f"{role}.export.json"
    network = ("--public-ip", address, "--network", org_network(address)) \
        if role in ("bootnode", "validator", "rpc") else ()
    host.pilotchain("keys", "new", "--role", role, "--org", org, *network, *extra,
                    "--out", str(out))
    return out


def hand_to(files: list[Path], host: Host) -> list[Path]:
    """Files passed to another host (mail, a USB stick): copies in its inbox."""
    inbox = host.home / "inbox"
    inbox.mkdir(exist_ok=True)
    return [Path(shutil.copy(path, inbox / f"{path.parent.name}-{path.name}")) for path in files]


def distribute(world: World, names: list[str]) -> None:
    """The coordinator's genesis.json and network.json to each host."""
    for name in names:
        for file in ("genesis.json", "network.json"):
            shutil.copy(world.coordinator.home / file, world.hosts[name].home / file)


def apply(world: World, name: str) -> str:
    """The host's roles brought up (or to the current manifest), its firewall loaded."""
    host = world.hosts[name]
    roles = [arg for role in world.roles(name) for arg in ("--role", role)]
    out = host.pilotchain("up", *roles, timeout=420).stdout
    host.run(["nft", "-f", str(host.home / "data" / "firewall.nft")])
    if name not in world.running:
        world.running.append(name)
    return out


def apply_all(world: World, names: list[str]) -> dict[str, str]:
    """Every host applies the manifest it was sent, each on its own: the hosts without a
    signer at once, the validators one after the other (as ``up`` on each returns only once
    its restarted validator is back in the chain)."""
    validators = [n for n in names if "validator" in world.roles(n)]
    others = [n for n in names if n not in validators]
    said = dict(zip(others, in_parallel([lambda n=n: apply(world, n) for n in others]),
                    strict=True))
    return {**said, **{name: apply(world, name) for name in validators}}


# -- reading the chain ---------------------------------------------------------------------------

def w3_of(host: Host, role: str = "validator") -> Web3:
    return connect(host.ipc(role), timeout=30)


def signer_of(w3: Web3, number: int) -> str:
    return Web3.to_checksum_address(w3.manager.request_blocking("clique_getSigner",
                                                                [hex(number)]))


def signers(w3: Web3) -> set[str]:
    return {Web3.to_checksum_address(s)
            for s in w3.manager.request_blocking("clique_getSigners", [])}


def sealed_by(w3: Web3, address: str, after: int) -> bool:
    return any(signer_of(w3, n) == address for n in range(after + 1, w3.eth.block_number + 1))


def head(w3: Web3) -> int:
    return int(w3.eth.block_number)


def peers(w3: Web3) -> int:
    return len(w3.manager.request_blocking("admin_peers", []))


def geth_pid(host: Host, role: str) -> int:
    return int(json.loads((host.home / "data" / "pids" / f"{role}.pid.json").read_text())["pid"])


def within(w3: Web3, blocks: int, condition: Any, what: str, why: str,
           progress: Any = None) -> Any:
    """Wait for ``condition``, measured by ``w3``'s chain: fail once it went ``blocks`` on
    without it (or halted), saying ``why`` that many are enough."""
    return wait_for_blocks(condition, w3=w3, blocks=blocks, period=PERIOD, what=what, why=why,
                           progress=progress)


def one_chain(views: dict[str, Web3], above: int, *, blocks: int = REJOIN) -> int:
    """Wait until every view has the same block at a common height above ``above``; return
    that height. Measured by the first view's chain."""
    def agree() -> int | None:
        height = min(head(w3) for w3 in views.values()) - 1
        hashes = {w3.eth.get_block(height)["hash"] for w3 in views.values()}
        return height if height > above and len(hashes) == 1 else None

    return int(within(next(iter(views.values())), blocks, agree,
                      f"{', '.join(views)} on one chain",
                      "a node back on the network redials its static peers within about "
                      "30 s and takes the heavier chain"))


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """A refusal is one sentence on stderr, no traceback."""
    assert result.returncode == 1, result
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message, message
    return message


def status(host: Host) -> dict[str, Any]:
    return json.loads(host.pilotchain("network", "status", "--json").stdout)


# -- the tests -----------------------------------------------------------------------------------

GETH_METRICS = "/debug/metrics/prometheus"


def fetch(host: Host, url: str) -> str:
    """The body at ``url`` as seen from ``host``'s namespace, or ``refused: ...``."""
    script = ("import sys, urllib.request\n"
              "try:\n"
              "    print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())\n"
              "except OSError as error:\n"
              "    print('refused:', error)\n")
    return host.run([sys.executable, "-c", script, url]).stdout


def test_a_three_organisations_found_the_network_and_seal_in_turn(world: World) -> None:
    hosts, coordinator = world.hosts, world.coordinator
    coordinator_export = keys_new(coordinator, "coordinator")
    exports = in_parallel([
        lambda: keys_new(hosts["a-boot"], "bootnode"),
        lambda: keys_new(hosts["a-val"], "validator"),
        lambda: keys_new(hosts["a-svc"], "rpc", "--url",
                         f"https://{hosts['a-svc'].address}:{RPC_TLS_PORT}"),
        lambda: keys_new(hosts["a-svc"], "apps"),
        lambda: keys_new(hosts["b-boot"], "bootnode"),
        lambda: keys_new(hosts["b-val"], "validator"),
        lambda: keys_new(hosts["c-val"], "validator"),
    ])
    # What leaves a host is public: no keystore, no node key, no password.
    for export in exports:
        text = export.read_text()
        assert "crypto" not in text and "ciphertext" not in text and "password" not in text
    for name in ("a-val", "b-val", "c-val"):
        keys = hosts[name].home / "keys"
        assert sorted(p.name for p in keys.iterdir()) == ["validator"]
        world.signers[name] = (keys / "validator" / "address").read_text().strip()
    coordinator.pilotchain("network", "found", "--start-in", str(START_IN),
                           *map(str, hand_to(exports, coordinator)))
    signer = json.loads(coordinator_export.read_text())["address"]
    for host in [*hosts.values(), world.client]:
        host.env["MANIFEST_SIGNER"] = signer
    distribute(world, list(FOUNDERS))
    founded = time.monotonic()
    in_parallel([lambda: apply(world, "a-boot"), lambda: apply(world, "b-boot")])
    # Before block 1 may be sealed, the founders can start all at once.
    in_parallel([lambda n=n: apply(world, n) for n in ("a-val", "b-val", "c-val")])
    print(f"founders' validators up {time.monotonic() - founded:.0f} s after founding")
    # uni-a's service host: its RPC node, then its apps, which wait for the first blocks.
    world.apps = ThreadPoolExecutor(max_workers=1).submit(apply, world, "a-svc")

    # Meanwhile, on a host with wrong files: each stops the node before it starts, in one
    # sentence.
    d = hosts["d-val"]
    distribute(world, ["d-val"])
    manifest = json.loads((d.home / "network.json").read_text())
    (d.home / "network.json").write_text(json.dumps(dict(manifest, block_period=2)))
    assert "is not signed by the coordinator" in one_line(
        d.pilotchain("up", "--role", "validator", check=False))
    (d.home / "network.json").write_text(json.dumps(manifest))
    genesis = read_genesis(d.home / "genesis.json")
    write_genesis(d.home / "genesis.json", {**genesis, "timestamp": "0x1"})
    assert "is not this network's genesis" in one_line(
        d.pilotchain("up", "--role", "validator", check=False))
    write_genesis(d.home / "genesis.json", genesis)
    assert "but CHAIN_ID is 9999" in one_line(
        d.pilotchain("up", "--role", "validator", check=False, CHAIN_ID="9999"))
    assert d.pids() == [] and not (d.home / "data" / "nodes").exists()

    a = w3_of(hosts["a-val"])
    # Block 1 is sealed START_IN s after the founding (less than a halt, 60 s, from here).
    founders = set(world.signers.values())

    def all_in_turn() -> list[str] | None:
        top = head(a)
        sealers = [signer_of(a, n) for n in range(max(1, top - 8), top + 1)]
        return sealers if len(sealers) == 9 and set(sealers) == founders else None

    # A validator that starts late on a busy machine syncs first while the others seal out
    # of turn; then each takes its turns: all three among any nine blocks.
    sealers = within(a, 6 * ROUNDS, all_in_turn, "each founder among the last nine sealers",
                     f"a late validator syncs and takes its turn within {6 * ROUNDS} blocks "
                     "of the first")
    assert all(x != y for x, y in itertools.pairwise(sealers))  # Clique: never twice running
    for name in ("a-val", "b-val", "c-val"):
        assert peers(w3_of(hosts[name])) >= 2, name
    # geth's own metrics on each validator host's loopback (GETH_METRICS_BASE_PORT + 1), and
    # not on the address its partners reach.
    for name in ("a-val", "b-val", "c-val"):
        here = fetch(hosts[name], f"http://127.0.0.1:6061{GETH_METRICS}")
        assert "chain_head_block" in here, name
        there = fetch(hosts["b-boot"], f"http://{hosts[name].address}:6061{GETH_METRICS}")
        assert there.startswith("refused"), (name, there[:200])


def test_b_the_apps_settle_a_recording_through_their_own_rpc_node(world: World) -> None:
    svc = world.hosts["a-svc"]
    assert world.apps is not None
    world.apps.result(timeout=600)
    svc.pilotchain("replay", str(RECORDING))
    lines = [line for line in RECORDING.read_text().splitlines() if line.strip()]
    deployment = load_deployment(svc.home / "data" / "settlement.json")
    rpc = w3_of(svc, "rpc")

    def settled() -> list[Any]:
        logs = rpc.eth.get_logs({"address": deployment.address,
                                 "fromBlock": deployment.block_number, "toBlock": "latest",
                                 "topics": [TRADE_SETTLED_TOPIC]})
        return decode_trade_settled_logs(logs)

    records = within(rpc, 20, lambda: (found := settled()) and len(found) >= len(lines) and found,
                     f"{len(lines)} trades settled",
                     "the bridge sends a batch as soon as the last one is mined",
                     progress=lambda: len(settled()))
    assert len({record.trade_id for record in records}) == len(records) == len(lines)


PROBE = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor

def reach(address):
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1.5).close()
        return "open"
    except OSError as error:
        return type(error).__name__

with ThreadPoolExecutor() as pool:
    print(json.dumps(dict(zip(sys.argv[1:], pool.map(reach, sys.argv[1:])))))
"""
CLIENT = """
import json, sys
import requests
from pilotchain.chain import connect
https, plain = sys.argv[1:3]
w3 = connect(https)  # the test CA through REQUESTS_CA_BUNDLE, as any requests client
out = {"chain_id": w3.eth.chain_id, "head": w3.eth.block_number}
call = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}
out["plain"] = requests.post(plain, json=call, timeout=5).status_code
try:
    requests.post(https, json=call, timeout=5, verify="/etc/ssl/certs/ca-certificates.crt")
    out["untrusted"] = "accepted"
except requests.exceptions.SSLError:
    out["untrusted"] = "refused"
print(json.dumps(out))
"""


def test_c_participants_reach_the_rpc_node_over_https_only(world: World) -> None:
    svc, a_val = world.hosts["a-svc"], world.hosts["a-val"]
    https = f"https://{svc.address}:{RPC_TLS_PORT}"
    client = json.loads(world.client.run(
        [sys.executable, "-c", CLIENT, https, f"http://{svc.address}:{RPC_TLS_PORT}"],
        env=world.client.settings(REQUESTS_CA_BUNDLE=str(world.ca))).stdout)
    assert client["chain_id"] == 8765 and client["head"] > 0
    assert client["plain"] == 400  # nginx: plain HTTP sent to the HTTPS port
    assert client["untrusted"] == "refused"  # real TLS: without the test CA, no trust
    rpc, p2p = f"{svc.address}:8545", f"{a_val.address}:30303"
    outside = json.loads(world.client.run(["python3", "-c", PROBE, rpc, p2p]).stdout)
    # geth's HTTP listens on loopback only, and the firewall drops a stranger's packets.
    assert outside == {rpc: "TimeoutError", p2p: "TimeoutError"}
    partner = json.loads(world.hosts["b-val"].run(["python3", "-c", PROBE, p2p]).stdout)
    assert partner == {p2p: "open"}


def test_d_a_fourth_organisation_joins_by_vote_of_two_of_three(world: World) -> None:
    hosts, coordinator = world.hosts, world.coordinator
    d = hosts["d-val"]
    export = keys_new(d, "validator")
    world.signers["d-val"] = (d.home / "keys" / "validator" / "address").read_text().strip()
    coordinator.pilotchain("network", "update", "--add", str(hand_to([export], coordinator)[0]))
    members = [*world.running, "d-val"]
    distribute(world, members)
    apply_all(world, world.running)  # its network joins --netrestrict: nodes restart
    apply(world, "d-val")
    a, dw = w3_of(hosts["a-val"]), w3_of(d)
    within(a, 30, lambda: head(dw) >= head(a) - 2, "uni-d's node to sync",
           "a few hundred blocks sync in seconds between neighbours",
           progress=lambda: head(dw))
    newcomer = world.signers["d-val"]
    assert newcomer not in signers(a)

    said = hosts["a-val"].pilotchain("propose", newcomer, "--add").stdout
    assert "passes when 2 of the 3 signers have voted" in said
    # uni-a's vote is on chain once its validator sealed a block: pending, 1 of 2.
    within(a, ROUNDS, lambda: any(
        v["address"].lower() == newcomer.lower()
        for v in a.manager.request_blocking("clique_getSnapshot", [])["votes"]),
        "uni-a's vote in a sealed block", "uni-a seals at least once in three blocks")
    pending = status(hosts["a-val"])
    assert [(v["name"], v["votes"], v["needed"]) for v in pending["votes"]] == [
        ("uni-d-validator", 1, 2)]
    assert pending["needed"] == 2 and pending["may_fail"] == 1
    before = head(a)
    hosts["b-val"].pilotchain("propose", newcomer, "--add")  # uni-c does not vote
    within(a, ROUNDS, lambda: newcomer in signers(a), "uni-d voted in",
           "uni-b seals at least once in three blocks")
    within(a, ROUNDS, lambda: sealed_by(a, newcomer, before), "uni-d to seal a block",
           "a signer's turn comes every four blocks")
    report = status(hosts["a-val"])
    assert report["needed"] == 3 and report["may_fail"] == 1 and report["votes"] == []
    nodes = {node["name"]: node for node in report["nodes"]}
    assert nodes["uni-d-validator"]["signer"] and nodes["uni-d-validator"]["reachable"]
    assert nodes["uni-a-rpc"]["head"] is not None  # asked over its public HTTPS URL


def test_e_one_organisation_is_voted_out_and_leaves(world: World) -> None:
    hosts = world.hosts
    a = w3_of(hosts["a-val"])
    leaving = world.signers["c-val"]
    for name in ("a-val", "b-val", "d-val"):  # three of four
        hosts[name].pilotchain("propose", leaving, "--remove")
    within(a, ROUNDS, lambda: leaving not in signers(a), "uni-c voted out",
           "each voter seals at least once in three blocks")
    removed_at = head(a)
    within(a, 9, lambda: head(a) >= removed_at + 9, "nine more blocks", "a block per period")
    assert not sealed_by(a, leaving, removed_at)
    # Leaving is the reverse of joining: its node stops, the manifest drops it, and the
    # others close their firewalls to it without restarting a node.
    pids = {name: geth_pid(hosts[name], "validator") for name in ("a-val", "b-val", "d-val")}
    hosts["c-val"].pilotchain("down")
    world.running.remove("c-val")
    world.coordinator.pilotchain("network", "update", "--remove", "uni-c-validator")
    distribute(world, world.running)
    apply_all(world, world.running)
    assert {name: geth_pid(hosts[name], "validator") for name in pids} == pids
    assert hosts["c-val"].address not in (hosts["a-val"].home / "data" / "firewall.nft").read_text()
    left_at = head(a)
    within(a, 6, lambda: head(a) >= left_at + 6, "sealing without uni-c",
           "a block per period")


def test_f_a_host_cut_off_for_60_s_rejoins_one_chain_with_its_data(world: World) -> None:
    hosts = world.hosts
    b = hosts["b-val"]
    views = {name: w3_of(hosts[name]) for name in ("a-val", "b-val", "d-val")}
    views["a-svc"] = w3_of(hosts["a-svc"], "rpc")
    pid, first = geth_pid(b, "validator"), views["b-val"].eth.get_block(1)["hash"]
    cut_at = head(views["a-val"])
    world.lan.unplug(b)
    try:
        # The cut lasts 60 s of chain time, by the others' chain, which seals all along.
        until = head_of(views["a-val"]).timestamp + CUT_SECONDS
        wait_until_chain_time(lambda: head_of(views["a-val"]).timestamp >= until,
                              w3=views["a-val"], until=until + 10 * PERIOD, period=PERIOD,
                              what="the end of the 60 s cut",
                              why="the two others seal a block per period")
        assert head(views["a-val"]) >= cut_at + CUT_SECONDS // 3
        assert head(views["b-val"]) <= cut_at + 3  # alone it seals one block at most
    finally:
        world.lan.plug(b)
    height = one_chain(views, above=head(views["a-val"]))
    within(views["a-val"], REJOIN, lambda: peers(views["b-val"]) >= 2, "uni-b's peers back",
           "geth redials a static peer within about 30 s")
    assert geth_pid(b, "validator") == pid  # the same process, never restarted
    assert views["b-val"].eth.get_block(1)["hash"] == first  # its data kept
    within(views["a-val"], ROUNDS, lambda: sealed_by(views["a-val"], world.signers["b-val"],
                                                    height),
           "uni-b to seal again", "a signer's turn comes every three blocks")
    assert "Rewinding blockchain" not in b.log("validator")


def test_g_a_validator_host_moves_and_rejoins_after_a_manifest_update(world: World) -> None:
    hosts = world.hosts
    d = hosts["d-val"]
    a, dw = w3_of(hosts["a-val"]), w3_of(d)
    others = {name: geth_pid(hosts[name], "validator") for name in ("a-val", "b-val")}
    d.set_address("10.201.4.20")
    export = d.home / "validator.moved.json"
    d.pilotchain("keys", "export", "--role", "validator", "--org", "uni-d", "--public-ip",
                 d.address, "--network", org_network(d.address), "--out", str(export))
    world.coordinator.pilotchain("network", "update", "--add",
                                 str(hand_to([export], world.coordinator)[0]))
    distribute(world, world.running)
    said = apply_all(world, world.running)
    assert "changed the peers of validator" in said["a-val"], said["a-val"]
    assert {name: geth_pid(hosts[name], "validator") for name in others} == others
    moved_at = head(a)
    within(a, REJOIN, lambda: peers(dw) >= 2, "uni-d's node to find its partners",
           "its partners dial its new address at once (static peers changed live)")
    within(a, ROUNDS, lambda: sealed_by(a, world.signers["d-val"], moved_at),
           "uni-d to seal from its new address", "a signer's turn comes every three blocks")
    one_chain({"a-val": a, "d-val": dw}, above=moved_at)


def test_h_with_a_bootnode_host_down_the_network_seals_and_takes_back_a_node(
        world: World) -> None:
    hosts = world.hosts
    a = w3_of(hosts["a-val"])
    world.lan.unplug(hosts["a-boot"])
    try:
        down_at = head(a)
        within(a, 5, lambda: head(a) >= down_at + 5, "five blocks without it",
               "a block per period")
        b = hosts["b-val"]
        b.pilotchain("down")
        b.pilotchain("up", "--role", "validator")
        bw = w3_of(b)
        within(a, REJOIN, lambda: peers(bw) >= 2 and head(bw) >= head(a) - 1,
               "the restarted validator to rejoin",
               "it dials its static peers at start, no bootnode needed")
        restarted_at = head(a)
        within(a, ROUNDS, lambda: sealed_by(a, world.signers["b-val"], restarted_at),
               "the restarted validator to seal", "a signer's turn comes every three blocks")
        report = status(hosts["a-val"])
        nodes = {node["name"]: node for node in report["nodes"]}
        assert nodes["uni-a-bootnode"]["reachable"] is False
        assert nodes["uni-b-bootnode"]["reachable"] is True
    finally:
        world.lan.plug(hosts["a-boot"])
