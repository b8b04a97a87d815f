"""The network of several organisations without a network: the genesis hash against geth's
own ``init``, exports and the signed manifest (every refusal a sentence), the nftables rules,
what makes ``up --role`` restart a node, and what ``network status`` concludes from blocks.
tests/test_hosts.py runs all of it on real hosts."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from pilotchain.config import ChainSettings
from pilotchain.errors import NetworkError
from pilotchain.firewall import nft_rules
from pilotchain.genesis import build_genesis, genesis_hash
from pilotchain.manifest import (
    Export,
    Manifest,
    ManifestError,
    accounts_export,
    check_for_host,
    check_not_older,
    found,
    load_manifest,
    node_export,
    read_export,
    signed,
    update,
    write_manifest,
)
from pilotchain.netstatus import Header, clock_warnings, not_sealing, pending_votes
from runner.hostnet import restart_reason

SETTINGS = ChainSettings(block_period=1)


def pubkey(n: int) -> str:
    return f"{n:02x}" * 64


def validator(org: str, n: int, host: str, signer: str | None = None) -> Export:
    return node_export(org, "validator", pubkey=pubkey(n), host=host,
                       networks=[host.rsplit(".", 1)[0] + ".0/24"],
                       signer=signer or Account.create().address)


def founding() -> list[Export]:
    apps = accounts_export("uni-a", {name: Account.create().address
                                     for name in ("faucet", "bridge", "operator")})
    return [
        node_export("uni-a", "bootnode", pubkey=pubkey(1), host="10.1.1.5"),
        node_export("uni-b", "bootnode", pubkey=pubkey(2), host="10.1.2.5"),
        validator("uni-a", 3, "10.1.1.10"), validator("uni-b", 4, "10.1.2.10"),
        validator("uni-c", 5, "10.1.3.10"), apps,
    ]


@pytest.fixture
def coordinator() -> LocalAccount:
    account: LocalAccount = Account.create()
    return account


@pytest.fixture
def network(tmp_path: Path, coordinator: LocalAccount) -> tuple[Path, Manifest]:
    genesis, manifest = found(founding(), SETTINGS, coordinator.address, start=1_800_000_000)
    (tmp_path / "genesis.json").write_text(json.dumps(genesis))
    write_manifest(tmp_path / "network.json", signed(manifest, coordinator))
    return tmp_path, manifest


# -- the genesis hash ----------------------------------------------------------------------

def test_the_genesis_hash_is_the_one_geth_init_writes(tmp_path: Path,
                                                      geth_bin_dir: Path) -> None:
    genesis = build_genesis(SETTINGS, [Account.create().address for _ in range(3)],
                            {"faucet": Account.create().address}, timestamp=1_800_000_000)
    # Code and storage too, so that every kind of trie node is hashed.
    genesis["alloc"]["0x" + "11" * 20] = {
        "balance": "0x1", "nonce": "0x2", "code": "0x6001600055",
        "storage": {"0x" + "00" * 31 + "01": "0x" + "00" * 31 + "2a",
                    "0x" + "ab" * 32: "0x" + "ff" * 32}}
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(genesis))
    out = subprocess.run([str(geth_bin_dir / "geth"), "--datadir", str(tmp_path / "data"),
                          "init", str(path)], capture_output=True, text=True, timeout=60,
                         check=True).stderr
    written = re.search(r"Successfully wrote genesis state\s+database=chaindata\s+"
                        r"hash=([0-9a-f]{6})\.\.([0-9a-f]{6})", out)
    assert written is not None, out
    ours = genesis_hash(genesis)
    assert (ours[2:8], ours[-6:]) == written.groups()


def test_a_fork_after_london_is_refused() -> None:
    genesis = build_genesis(SETTINGS, [Account.create().address], {}, timestamp=0)
    genesis["config"]["shanghaiTime"] = 0
    with pytest.raises(NetworkError, match="after London"):
        genesis_hash(genesis)


# -- exports ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("host", "says"), [
    ("198.18.0.1", "special-use ranges"),
    ("127.0.0.1", "cannot be a public address"),
    ("169.254.1.1", "cannot be a public address"),
    ("node.uni-a.example", "is not an IP address"),
])
def test_an_address_partners_cannot_use_is_refused(host: str, says: str) -> None:
    with pytest.raises(ManifestError, match=says):
        node_export("uni-a", "validator", pubkey=pubkey(1), host=host,
                    signer=Account.create().address)


def test_an_address_outside_its_own_networks_is_refused() -> None:
    with pytest.raises(ManifestError, match="outside the networks given with it"):
        node_export("uni-a", "validator", pubkey=pubkey(1), host="10.1.1.10",
                    networks=["10.9.0.0/16"], signer=Account.create().address)
    with pytest.raises(ManifestError, match="would admit every address"):
        node_export("uni-a", "validator", pubkey=pubkey(1), host="10.1.1.10",
                    networks=["0.0.0.0/0"], signer=Account.create().address)


def test_an_export_round_trips_and_holds_nothing_secret(tmp_path: Path) -> None:
    export = validator("uni-a", 7, "10.1.1.10")
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export.to_json()))
    assert read_export(path) == export
    assert set(export.to_json()) == {"kind", "format", "organisation", "role", "name", "enode",
                                     "host", "ports", "networks", "signer"}
    body = dict(export.to_json(), enode=export.to_json()["enode"].replace("10.1.1.10",
                                                                           "10.1.1.11"))
    path.write_text(json.dumps(body))
    with pytest.raises(ManifestError, match="disagree with its enode"):
        read_export(path)


# -- the manifest -------------------------------------------------------------------------------

def test_the_signed_manifest_loads_and_names_the_network(network: tuple[Path, Manifest],
                                                         coordinator: LocalAccount) -> None:
    home, manifest = network
    loaded = load_manifest(home / "network.json", coordinator.address)
    assert loaded == manifest and loaded.version == 1
    assert [n.name for n in loaded.validators] == ["uni-a-validator", "uni-b-validator",
                                                   "uni-c-validator"]
    # --netrestrict: every node's networks, merged (the bootnodes' /32s inside them).
    assert loaded.networks == ["10.1.1.0/24", "10.1.2.0/23"]
    settings = ChainSettings(genesis_file=home / "genesis.json")
    genesis = check_for_host(loaded, home / "network.json", settings)
    assert genesis_hash(genesis) == loaded.genesis_hash
    me = loaded.validators[0]
    assert [p.name for p in loaded.static_peers(me)] == ["uni-b-validator", "uni-c-validator"]


def test_a_changed_or_foreign_manifest_is_refused(network: tuple[Path, Manifest],
                                                  coordinator: LocalAccount) -> None:
    home, _ = network
    path = home / "network.json"
    content = json.loads(path.read_text())
    path.write_text(json.dumps(dict(content, block_period=2)))
    with pytest.raises(ManifestError, match="is not signed by the coordinator"):
        load_manifest(path, coordinator.address)
    path.write_text(json.dumps(content))
    with pytest.raises(ManifestError, match="is not signed by the coordinator"):
        load_manifest(path, Account.create().address)
    with pytest.raises(ManifestError, match="MANIFEST_SIGNER is not set"):
        load_manifest(path, None)


def test_another_genesis_or_chain_id_is_refused(network: tuple[Path, Manifest],
                                                coordinator: LocalAccount) -> None:
    home, manifest = network
    path = home / "network.json"
    with pytest.raises(ManifestError, match="but CHAIN_ID is 9999"):
        check_for_host(manifest, path, ChainSettings(chain_id=9999,
                                                     genesis_file=home / "genesis.json"))
    genesis = json.loads((home / "genesis.json").read_text())
    (home / "other.json").write_text(json.dumps(dict(genesis, timestamp="0x1")))
    with pytest.raises(ManifestError, match="is not this network's genesis"):
        check_for_host(manifest, path, ChainSettings(genesis_file=home / "other.json"))
    with pytest.raises(ManifestError, match="is missing"):
        check_for_host(manifest, path, ChainSettings(genesis_file=home / "none.json"))


def test_updates_add_replace_remove_and_never_go_back(network: tuple[Path, Manifest]) -> None:
    _, v1 = network
    v2 = update(v1, add=[validator("uni-d", 9, "10.1.4.10")])
    assert v2.version == 2 and v2.named("uni-d-validator") is not None
    joined = v2.named("uni-d-validator")
    assert joined is not None
    v3 = update(v2, add=[validator("uni-d", 9, "10.1.4.20", joined.signer)])  # it moved
    moved = v3.named("uni-d-validator")
    assert moved is not None and (moved.host, moved.pubkey) == ("10.1.4.20", joined.pubkey)
    v4 = update(v3, remove=["uni-c-validator"])
    assert v4.named("uni-c-validator") is None and "10.1.3.10" not in v4.hosts
    check_not_older(v4, Path("network.json"), 4)
    with pytest.raises(ManifestError, match="older than version 4"):
        check_not_older(v3, Path("network.json"), 4)
    with pytest.raises(ManifestError, match="no node named uni-x"):
        update(v4, remove=["uni-x"])
    with pytest.raises(ManifestError, match="share the node key"):
        update(v4, add=[node_export("uni-e", "validator", pubkey=pubkey(3), host="10.1.5.10",
                                    signer=Account.create().address)])


def test_a_network_needs_bootnodes_of_two_organisations(coordinator: LocalAccount) -> None:
    exports = [e for e in founding() if e.name != "uni-b-bootnode"]
    with pytest.raises(ManifestError, match="Bootnodes are run by 1 organisation"):
        found(exports, SETTINGS, coordinator.address, start=1_800_000_000)


# -- the firewall ----------------------------------------------------------------------------

def test_firewall_rules_open_p2p_to_partners_only(network: tuple[Path, Manifest]) -> None:
    _, manifest = network
    me = manifest.named("uni-a-validator")
    assert me is not None
    rules = nft_rules(manifest, [me])
    assert "elements = { 10.1.1.5, 10.1.1.10, 10.1.2.5, 10.1.2.10, 10.1.3.10 }" in rules
    for proto in ("tcp", "udp"):
        assert f"{proto} dport 30303 ip saddr @partners4 accept" in rules
        assert f"{proto} dport 30303 drop" in rules
    assert "8443" not in rules
    proxy = nft_rules(manifest, [me], https_port=8443, local_only=(8545, 8546))
    assert "tcp dport 8443 accept" in proxy and "tcp dport { 8545, 8546 } drop" in proxy


# -- restarts and status -------------------------------------------------------------------------

def test_a_node_restarts_only_for_what_geth_reads_at_start() -> None:
    had = {"host": "10.1.1.10", "port": 30303, "networks": ["10.1.1.0/24", "10.1.2.0/24"],
           "bootnodes": ["b1"], "peers": ["p1"]}
    assert restart_reason(None, had) == "is applied for the first time"
    assert restart_reason(had, dict(had, peers=["p1", "p2"])) is None
    assert restart_reason(had, dict(had, bootnodes=["b2"])) is None
    assert restart_reason(had, dict(had, networks=["10.1.1.0/24"])) is None
    assert "admits partners from 10.1.4.0/24" in str(
        restart_reason(had, dict(had, networks=[*had["networks"], "10.1.4.0/24"])))
    assert "moves it to 10.1.1.11:30303" in str(restart_reason(had, dict(had, host="10.1.1.11")))


SIGNERS = ["0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40]


def chain(stamps: list[tuple[str, int]], start: int = 100) -> list[Header]:
    headers, t = [], 1_000
    for n, (signer, gap) in enumerate(stamps):
        t += gap
        headers.append(Header(start + n, t, signer))
    return headers


def test_status_names_a_signer_whose_clock_runs_ahead() -> None:
    a, b, c = SIGNERS
    headers = chain([(a, 1), (b, 1), (c, 6)] * 10)
    warnings = clock_warnings(headers, 1, headers[-1].timestamp + 0.5, {c: "uni-c-validator"})
    assert len(warnings) == 1 and warnings[0].startswith(
        "uni-c-validator stamps its blocks a median 6 s after their parents")
    ahead = clock_warnings(headers, 1, headers[-1].timestamp - 30, {})
    assert "ahead of this host's clock" in ahead[0]
    assert clock_warnings(chain([(a, 1), (b, 1), (c, 1)] * 10), 1, 1_030.5, {}) == []


def test_status_counts_who_is_not_sealing_and_pending_votes() -> None:
    a, b, c = SIGNERS
    headers = chain([(a, 1), (b, 1)] * 10)
    assert not_sealing(SIGNERS, headers, headers[-1].number) == [c]
    assert not_sealing(SIGNERS, headers[:4], headers[3].number) == []  # too young to tell
    newcomer = "0x" + "d" * 40
    snapshot = {"votes": [{"signer": a, "address": newcomer, "authorize": True}]}
    [vote] = pending_votes(snapshot, SIGNERS, {})
    assert (vote.votes, vote.needed, vote.authorize) == (1, 2, True)
