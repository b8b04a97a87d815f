"""One organisation's host in a network of several: the nodes ``./scripts/up --role`` runs.

A host runs one or more of the roles bootnode, validator and RPC node (the apps are services,
:mod:`runner.stack`) with its own keys (``pilotchain keys new``), the coordinator's
``genesis.json`` and the signed network manifest. Before a node starts the manifest is checked
(the coordinator's signature, chain id, genesis hash, not older than the one applied), and the
node takes from it its public address (``--nat extip``), its port, its static peers, the
bootnodes and the partners' networks (``--netrestrict``). Run again with a newer manifest,
``up`` applies it: static peers changed through the node's own IPC (geth's admin API), and a
clean restart only where geth reads the setting at start alone (address, port, bootnodes,
networks). A restart keeps the chain data; nothing here ever deletes it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from web3.types import RPCEndpoint

from pilotchain.chain import call, connect, wait_for
from pilotchain.config import ChainSettings
from pilotchain.discovery import ping
from pilotchain.errors import ChainError
from pilotchain.firewall import nft_rules
from pilotchain.keys import KeysError
from pilotchain.manifest import (
    Manifest,
    ManifestError,
    NodeEntry,
    check_not_older,
    host_manifest,
    local_nodes,
)
from pilotchain.settings import PROJECT_ROOT
from runner.localnet import BOOTNODE, RPC_NODE, LocalNetwork

VALIDATOR = "validator"
NODE_ROLES = (BOOTNODE, VALIDATOR, RPC_NODE)
ROLES = (*NODE_ROLES, "apps")
# Engine API ports (loopback, JWT) and geth's metrics ports (GETH_METRICS_ADDR) as in the
# single-host layout: base + 1 and base + 4.
AUTHRPC_OFFSETS = {VALIDATOR: 1, RPC_NODE: 4}
# How long ``up`` waits for a restarted validator to be back in the chain.
REJOIN_TIMEOUT = 90.0


@dataclass(frozen=True)
class Applied:
    """What one ``up --role`` did to each node."""

    started: list[str]
    restarted: list[str]
    peers_changed: list[str]
    manifest_version: int
    firewall: Path | None  # this version's nftables rules for the host's nodes


def restart_reason(had: dict[str, Any] | None, want: dict[str, Any]) -> str | None:
    """Why a running node must restart for a new manifest, or None.

    Only for what geth reads at start alone and the node cannot do without: its own address
    or port, and a partner's network its ``--netrestrict`` does not admit yet. A network
    dropped (a partner left) and changed bootnodes wait for the next restart: the firewall
    already closes a departed partner's hosts, and static peers, changed live, carry the
    network without discovery. Fewer restarts, fewer validators restarting at once.
    """
    if had is None:
        return "is applied for the first time"
    if (had["host"], had["port"]) != (want["host"], want["port"]):
        return f"moves it to {want['host']}:{want['port']}"
    admitted = [ipaddress.ip_network(net) for net in had["networks"]]
    new = [net for net in want["networks"] if not any(
        ipaddress.ip_network(net).subnet_of(old) for old in admitted  # type: ignore[arg-type]
        if old.version == ipaddress.ip_network(net).version)]
    if new:
        return f"admits partners from {', '.join(new)} (--netrestrict)"
    return None


class HostNetwork(LocalNetwork):
    """The nodes of this host's roles, configured from the network manifest."""

    def __init__(self, settings: ChainSettings, roles: Sequence[str] = ()) -> None:
        super().__init__(settings, settings.geth_bin_dir)
        recorded = set(self.host_state.get("roles", []))
        self.roles = [role for role in ROLES if role in recorded | set(roles)]
        self._manifest: Manifest | None = None

    @property
    def host_state(self) -> dict[str, Any]:
        """What this host applied: its roles, the manifest version, each node's settings."""
        state: dict[str, Any] = self._state.setdefault("host", {})
        return state

    def node_names(self) -> list[str]:
        return [role for role in NODE_ROLES if role in self.roles]

    # -- the manifest -------------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        """The manifest, checked as before any start, and never older than the one applied."""
        if self._manifest is None:
            manifest = host_manifest(self.settings)
            check_not_older(manifest, self.settings.manifest_file,
                            self.host_state.get("manifest_version"))
            self._manifest = manifest
        return self._manifest

    def entry(self, role: str) -> NodeEntry:
        """This host's node of ``role`` in the manifest, found by its key."""
        manifest = self.manifest  # a wrong manifest or genesis is the first thing to say
        pubkey = self.keys.node_pubkey(role)
        node = manifest.node_with_key(pubkey)
        if node is None or node.role != role:
            raise ManifestError(
                f"This host's {role} (enode key {pubkey[:12]}…) is not in "
                f"{self.settings.manifest_file.name} version {self.manifest.version}: send its "
                f"export ('pilotchain keys export --role {role}') to the coordinator."
            )
        return node

    def wanted(self, role: str) -> dict[str, Any]:
        """What the manifest asks of this host's ``role`` node."""
        me = self.entry(role)
        peers = [] if role == BOOTNODE else self.manifest.static_peers(me)  # discovery only
        return {"name": me.name, "host": me.host, "port": me.port,
                "bootnodes": [node.enode for node in self.manifest.bootnodes],
                "networks": self.manifest.networks, "peers": [node.enode for node in peers]}

    # -- processes -----------------------------------------------------------------------

    def node_ports(self, name: str) -> dict[str, int]:
        """The manifest's port; the engine API's as in the single-host layout (none for the
        bootnode)."""
        offset = AUTHRPC_OFFSETS.get(name)
        metrics = self.settings.geth_metrics_base_port
        return {"p2p": self.entry(name).port,
                "authrpc": 0 if offset is None else self.settings.authrpc_base_port + offset,
                "metrics": 0 if offset is None or not metrics else metrics + offset}

    def _command(self, name: str, ports: dict[str, int]) -> tuple[list[str], dict[str, str]]:
        want = self.wanted(name)
        networks = ",".join(want["networks"])
        if name == BOOTNODE:
            argv = [str(self.bin_dir / "bootnode"), "-nodekey", str(self.keys.bootnode_key_file),
                    "-addr", f":{want['port']}", "-nat", f"extip:{want['host']}",
                    "-netrestrict", networks, "-verbosity", "3"]
            return argv, self._base_env(name, ports)
        env = {**self._base_env(name, ports), "BOOTNODES": ",".join(want["bootnodes"]),
               "NAT": f"extip:{want['host']}", "NETRESTRICT": networks,
               "STATIC_PEERS": ",".join(want["peers"])}
        if name == RPC_NODE:
            env.update(HTTP_ADDR=self.settings.host, HTTP_PORT=str(self.ports.http),
                       WS_PORT=str(self.ports.ws),
                       NODEKEY_FILE=str(self.keys.directory / "rpc" / "nodekey"))
            return ["bash", str(PROJECT_ROOT / "node.sh")], env
        role = self.keys.role(VALIDATOR)
        env.update(SIGNER_ADDRESS=role.address, KEYSTORE_FILE=str(role.keystore),
                   PASSWORD_FILE=str(role.password_file), GAS_LIMIT=str(self.settings.gas_limit),
                   NODEKEY_FILE=str(role.nodekey_file))
        return ["bash", str(PROJECT_ROOT / "validator.sh")], env

    # -- applying the manifest -----------------------------------------------------------

    def apply(self, roles: Sequence[str], progress: Callable[[str], None] = lambda _: None
              ) -> Applied:
        """Start the nodes of ``roles`` that are not running and bring those that are to the
        manifest: live peer changes, or a clean restart where geth needs one."""
        manifest = self.manifest
        started, restarted, peers_changed = [], [], []
        for name in [role for role in NODE_ROLES if role in roles]:
            want = self.wanted(name)
            had = self.host_state.setdefault("applied", {}).get(name)
            if not self.is_running(name):
                progress(f"starting {name} {want['name']} at {want['host']}:{want['port']} "
                         f"(log: {self.log_file(name)})")
                self._start_checked(name, want)
                started.append(name)
            elif (reason := restart_reason(had, want)) is not None:
                progress(f"restarting {name}: network manifest version {manifest.version} "
                         f"{reason}, which geth reads at start only")
                before = self.block_number(name) if name == VALIDATOR else 0
                self.stop_node(name)
                self._start_checked(name, want)
                restarted.append(name)
                if name == VALIDATOR:
                    self._wait_rejoined(name, before, progress)
            else:
                if had.get("peers") != want["peers"]:
                    progress(f"changing {name}'s static peers without a restart")
                    self._change_peers(name, had.get("peers", []), want["peers"])
                    peers_changed.append(name)
                # What geth took at start stays in effect until the next restart.
                want = {**want, "networks": had["networks"], "bootnodes": had["bootnodes"]}
            self.host_state["applied"][name] = want
            self._write_state()
        self.host_state["roles"] = [role for role in ROLES
                                    if role in set(self.roles) | set(roles)]
        self.host_state["manifest_version"] = manifest.version
        self._write_state()
        return Applied(started, restarted, peers_changed, manifest.version,
                       self._write_firewall())

    def _wait_rejoined(self, name: str, before: int, progress: Callable[[str], None]) -> None:
        """Return only once the restarted validator has partners and a block newer than
        before its restart. Validators restarted at the same moment (every organisation
        applying a manifest at once) may each seal a block of the same height, and Clique
        can keep such equal forks; one at a time, each rejoins a chain that kept going."""
        progress(f"waiting for {name} to rejoin: partners and a block after {before}")
        try:
            wait_for(lambda: self.block_number(name) > before and self._peer_count(name),
                     timeout=REJOIN_TIMEOUT, what=f"{name} to rejoin the network")
        except ChainError:
            progress(f"WARNING: {name} has no new block {REJOIN_TIMEOUT:.0f} s after its "
                     "restart; see 'pilotchain network status'.")

    def _peer_count(self, name: str) -> int:
        ipc = str(self.ipc_path(name))
        w3 = connect(ipc)
        peers = call(ipc, f"Reading {name}'s peers",
                     lambda: w3.manager.request_blocking(RPCEndpoint("admin_peers"), []))
        return len(peers)

    def _write_firewall(self) -> Path | None:
        """This version's nftables rules for the nodes of this host, for its administrator
        to load (``nft -f``): loading firewall rules takes root, running nodes does not."""
        here = local_nodes(self.manifest, self.keys)
        if not here:
            return None
        proxy = any(node.role == RPC_NODE for node in here) and \
            self.settings.tls_cert_file is not None
        rules = nft_rules(self.manifest, here,
                          https_port=self.settings.tls_port if proxy else None,
                          local_only=(self.ports.http, self.ports.ws) if proxy else ())
        path = self.home / "firewall.nft"
        path.write_text(rules)
        return path

    def _start_checked(self, name: str, want: dict[str, Any]) -> None:
        """Start ``name`` and make sure it runs this network's chain (a data directory of
        another chain would start happily: geth checks genesis only when initialising).
        A validator seals only once it has caught up with its partners' chain."""
        self.start_node(name, seal=name != VALIDATOR)
        if name == BOOTNODE:
            me = self.entry(BOOTNODE)
            wait_for(lambda: ping(me.host, me.port, me.pubkey) or self._check_alive(name),
                     timeout=30, what=f"the bootnode to answer at {me.host}:{me.port}")
            return
        ipc = str(self.ipc_path(name))
        w3 = self.web3(name)
        block = call(ipc, f"Reading {name}'s genesis", lambda: w3.eth.get_block(0))
        if block["hash"].to_0x_hex() != self.manifest.genesis_hash:
            self.stop_node(name)
            raise ManifestError(
                f"{self.datadir(name)} holds another chain (genesis "
                f"{block['hash'].to_0x_hex()[:14]}…, not {self.manifest.genesis_hash[:14]}…): "
                "move it away or set NATIVE_DATA_DIR to another folder; PilotChain never "
                "deletes chain data."
            )
        if name == VALIDATOR:
            # Whether its partners seal is not known here: catch up, for a while at most.
            self._start_sealing([name], live=True)

    def _change_peers(self, name: str, old: list[str], new: list[str]) -> None:
        """Static peers through the node's IPC: a changed address needs the old enode removed
        first (geth ignores a static node it already has by key)."""
        ipc = str(self.ipc_path(name))
        w3 = connect(ipc)  # the admin API is on IPC only (the RPC node's HTTP lacks it)
        changes = [("admin_removePeer", e) for e in old if e not in new]
        changes += [("admin_addPeer", e) for e in new if e not in old]
        for method, enode in changes:
            call(ipc, f"Changing {name}'s peer {enode} ({method})",
                 partial(w3.manager.request_blocking, RPCEndpoint(method), [enode]))

    def container_env(self, role: str) -> dict[str, str]:
        """What the ``role`` node's container runs (docker-compose.hosts.yml): the manifest
        checked as before a native start, then the settings ``validator.sh``/``node.sh`` read,
        or ``BOOTNODE_ARGS``. Paths are this host's, which the container mounts alike."""
        self.check_keys([role])
        argv, env = self._command(role, self.node_ports(role))
        for own in ("PATH", "HOME", "PILOTCHAIN_GETH"):  # the image's, not ours
            env.pop(own, None)
        if role == BOOTNODE:
            env = {"BOOTNODE_ARGS": " ".join(argv[1:])}
        elif role == RPC_NODE:
            # HTTP_ADDR stays RPC_HOST: in docker-compose.hosts.yml the node's name on its
            # internal network, so plain HTTP is never served on the partners' network. The
            # apps there call it by its service name.
            names = [*env.get("VHOSTS", "localhost").split(","), "rpc-node"]
            env["VHOSTS"] = ",".join(dict.fromkeys(names))
        return {"NODE_ROLE": role, **env}

    def check_keys(self, roles: Sequence[str]) -> None:
        """Every node role asked for has its key and its place in the manifest."""
        for role in roles:
            if role in NODE_ROLES:
                try:
                    self.entry(role)
                except KeysError:
                    raise KeysError(
                        f"This host has no {role} key in {self.keys.directory}: create it with "
                        f"'pilotchain keys new --role {role} ...' and send the export to the "
                        "coordinator."
                    ) from None
