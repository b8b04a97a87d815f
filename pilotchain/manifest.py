"""A network of several organisations: node exports and the signed network manifest.

Keys never leave their organisation. Each host makes its own (``pilotchain keys new --role``)
and hands out only its *export*: the public part the others need (the enode public key, the
signer address, the public address and port, the networks the organisation's hosts use). The
coordinator assembles the founding exports into ``genesis.json`` and the *network manifest*
(``network.json``): chain id, genesis hash and every node with its enode, address and ports,
versioned and signed by the coordinator's key. Every host checks it before a node starts
(:func:`check_for_host`) and takes its peers, bootnodes, ``--netrestrict`` and firewall from
it. See docs/deployment.md.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils.address import is_address, to_checksum_address

from pilotchain.config import ChainSettings
from pilotchain.errors import NetworkError
from pilotchain.genesis import PREFUND, build_genesis, genesis_hash, read_genesis
from pilotchain.keys import KeyStore

FORMAT = 1
EXPORT_KIND = "pilotchain-export"
MANIFEST_KIND = "pilotchain-network"
NODE_ROLES = ("bootnode", "validator", "rpc")
# Every role an export may describe: the nodes, the apps' accounts, the coordinator's key.
EXPORT_ROLES = (*NODE_ROLES, "apps", "coordinator")
DEFAULT_PORTS = {"bootnode": 30301, "validator": 30303, "rpc": 30303}
# The apps accounts genesis funds (the others are funded by the operator at deployment).
FUNDED_ACCOUNTS = tuple(PREFUND)
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
PUBKEY = re.compile(r"^[0-9a-f]{128}$")
ENODE = re.compile(r"^enode://([0-9a-f]{128})@([^:/?]+|\[[0-9a-fA-F:]+\]):(\d+)(\?discport=(\d+))?$")
# Ranges geth's discovery never relays (p2p/netutil: IsSpecialNetwork), beyond Python's own
# loopback, link-local, multicast, reserved and unspecified.
GETH_SPECIAL = tuple(ipaddress.ip_network(n) for n in (
    "192.0.0.0/29", "192.0.0.9/32", "192.0.0.170/31", "192.0.2.0/24", "192.31.196.0/24",
    "192.52.193.0/24", "192.88.99.0/24", "192.175.48.0/24", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "100::/64", "2001::/32", "2001:db8::/32", "2002::/16"))


class ManifestError(NetworkError):
    """A node export or the network manifest is malformed, not signed by the coordinator, or
    for another chain."""


@dataclass(frozen=True)
class NodeEntry:
    """One node of the network: who runs it, where partners reach it, who it is."""

    name: str
    organisation: str
    role: str
    host: str
    port: int
    pubkey: str
    networks: tuple[str, ...]
    signer: str | None = None
    url: str | None = None

    @property
    def enode(self) -> str:
        """The enode URL: a bootnode answers discovery only (UDP), so its TCP port is 0."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.role == "bootnode":
            return f"enode://{self.pubkey}@{host}:0?discport={self.port}"
        return f"enode://{self.pubkey}@{host}:{self.port}"

    @property
    def ports(self) -> dict[str, int]:
        """What partners must reach: devp2p over TCP and discovery over UDP on one port."""
        if self.role == "bootnode":
            return {"udp": self.port}
        return {"tcp": self.port, "udp": self.port}

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "organisation": self.organisation,
                                 "role": self.role, "enode": self.enode, "host": self.host,
                                 "ports": self.ports, "networks": list(self.networks)}
        if self.signer:
            entry["signer"] = self.signer
        if self.url:
            entry["url"] = self.url
        return entry


@dataclass(frozen=True)
class Export:
    """What one host hands out about one of its roles; never a private key."""

    organisation: str
    role: str
    name: str
    node: NodeEntry | None = None
    accounts: dict[str, str] = field(default_factory=dict)
    address: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": EXPORT_KIND, "format": FORMAT,
                                "organisation": self.organisation, "role": self.role,
                                "name": self.name}
        if self.node is not None:
            body.update({key: value for key, value in self.node.to_json().items()
                         if key not in body})
        if self.accounts:
            body["accounts"] = self.accounts
        if self.address:
            body["address"] = self.address
        return body


def node_export(organisation: str, role: str, *, pubkey: str, host: str,
                port: int | None = None, networks: Sequence[str] = (), name: str | None = None,
                signer: str | None = None, url: str | None = None) -> Export:
    """The export of a bootnode, validator or RPC node, every field checked."""
    org = checked_name(organisation, "organisation")
    node_name = checked_name(name or f"{org}-{role}", "node name")
    ip = checked_host(host, node_name)
    nets = checked_networks(networks or [str(ipaddress.ip_network(ip))], node_name)
    entry = NodeEntry(node_name, org, role, ip, checked_port(port or DEFAULT_PORTS[role]),
                      pubkey, nets, signer, checked_url(url) if url else None)
    _check_inside(entry)
    return Export(org, role, node_name, node=entry)


def accounts_export(organisation: str, accounts: Mapping[str, str],
                    name: str | None = None) -> Export:
    org = checked_name(organisation, "organisation")
    return Export(org, "apps", checked_name(name or f"{org}-apps", "name"),
                  accounts=dict(accounts))


def coordinator_export(organisation: str, address: str) -> Export:
    org = checked_name(organisation, "organisation")
    return Export(org, "coordinator", f"{org}-coordinator", address=address)


# -- checks of single fields ---------------------------------------------------------------

def checked_name(text: str, what: str) -> str:
    if not NAME.match(text):
        raise ManifestError(f"{text!r} is not a valid {what}: use up to 40 lowercase letters, "
                            "digits and dashes (e.g. uni-a).")
    return text


def checked_host(text: str, node: str) -> str:
    """An IP address partners can reach: geth resolves host names once, at start, and its
    discovery ignores special ranges."""
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise ManifestError(
            f"{node}: {text!r} is not an IP address; give the address partners reach this host "
            "at (geth resolves a host name only once, at start)."
        ) from None
    unusable = (ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_link_local
                or ip.is_reserved or any(ip in net for net in GETH_SPECIAL
                                         if net.version == ip.version))
    if unusable:
        raise ManifestError(
            f"{node}: {ip} cannot be a public address: loopback, link-local, multicast and "
            "special-use ranges (such as 198.18.0.0/15) are not reachable by partners or are "
            "ignored by geth's discovery; use the host's public or RFC 1918 address."
        )
    return str(ip)


def checked_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ManifestError(f"{port} is not a port number (1 to 65535).")
    return port


def checked_networks(networks: Iterable[str], node: str) -> tuple[str, ...]:
    found = []
    for text in networks:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ManifestError(f"{node}: {text!r} is not a network (CIDR, e.g. "
                                "10.20.0.0/24).") from None
        if net.prefixlen == 0:
            raise ManifestError(f"{node}: {net} would admit every address; name the "
                                "organisation's own networks.")
        found.append(str(net))
    return tuple(sorted(set(found)))


def checked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ManifestError(f"{url!r} is not an https:// URL: participants reach an RPC node "
                            "only through its TLS proxy.")
    return url


def checked_address(text: str, what: str) -> str:
    if not isinstance(text, str) or not is_address(text):
        raise ManifestError(f"{what}: {text!r} is not an address (0x and 40 hex digits).")
    return to_checksum_address(text)


def _check_inside(entry: NodeEntry) -> None:
    ip = ipaddress.ip_address(entry.host)
    if not any(ip in ipaddress.ip_network(net) for net in entry.networks):
        raise ManifestError(
            f"{entry.name}: its address {entry.host} is outside the networks given with it "
            f"({', '.join(entry.networks)}); partners would refuse it (--netrestrict)."
        )


# -- reading exports -----------------------------------------------------------------------

def read_export(path: Path) -> Export:
    """An export file (``keys new --out``), every field checked; one sentence if not."""
    body = _read_json(path, "export")
    if body.get("kind") != EXPORT_KIND or body.get("format") != FORMAT:
        raise ManifestError(f"{path} is not a PilotChain export (format {FORMAT}); make it with "
                            "'pilotchain keys export'.")
    try:
        return _export_from_json(body)
    except (KeyError, TypeError, ValueError) as error:
        raise ManifestError(f"{path} is an incomplete export ({error!s}); make it again with "
                            "'pilotchain keys export'.") from None


def _export_from_json(body: dict[str, Any]) -> Export:
    role = body["role"]
    if role not in EXPORT_ROLES:
        raise ManifestError(f"Unknown role {role!r}: exports are of {', '.join(EXPORT_ROLES)}.")
    if role == "apps":
        accounts = {name: checked_address(address, f"{body['name']} {name}")
                    for name, address in dict(body["accounts"]).items()}
        missing = sorted(set(FUNDED_ACCOUNTS) - set(accounts))
        if missing:
            raise ManifestError(f"The apps export {body['name']} lacks the {', '.join(missing)} "
                                "account(s) genesis funds.")
        return accounts_export(body["organisation"], accounts, body["name"])
    if role == "coordinator":
        return coordinator_export(body["organisation"],
                                  checked_address(body["address"], "coordinator"))
    entry = node_from_json(body)
    return Export(entry.organisation, role, entry.name, node=entry)


def node_from_json(body: Mapping[str, Any]) -> NodeEntry:
    """A node entry of an export or of the manifest; its enode must agree with its fields."""
    name = checked_name(body["name"], "node name")
    role = body["role"]
    if role not in NODE_ROLES:
        raise ManifestError(f"{name}: unknown node role {role!r}.")
    match = ENODE.match(body["enode"])
    if not match:
        raise ManifestError(f"{name}: {body['enode']!r} is not an enode URL.")
    pubkey, host, port = match.group(1), match.group(2).strip("[]"), int(match.group(3))
    if role == "bootnode":
        port = int(match.group(5) or 0)
    signer = checked_address(body["signer"], name) if role == "validator" else None
    entry = NodeEntry(name, checked_name(body["organisation"], "organisation"), role,
                      checked_host(host, name), checked_port(port), pubkey,
                      checked_networks(body["networks"], name), signer,
                      checked_url(body["url"]) if body.get("url") else None)
    if body.get("host") not in (None, entry.host) or (
            "ports" in body and dict(body["ports"]) != entry.ports):
        raise ManifestError(f"{name}: its host or ports disagree with its enode "
                            f"{entry.enode}.")
    _check_inside(entry)
    return entry


# -- the manifest ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Manifest:
    """The network as the coordinator last signed it."""

    version: int
    network_name: str
    chain_id: int
    genesis_hash: str
    block_period: int
    coordinator: str
    issued: str
    nodes: tuple[NodeEntry, ...]

    def by_role(self, role: str) -> list[NodeEntry]:
        return [node for node in self.nodes if node.role == role]

    @property
    def validators(self) -> list[NodeEntry]:
        return self.by_role("validator")

    @property
    def bootnodes(self) -> list[NodeEntry]:
        return self.by_role("bootnode")

    def node_with_key(self, pubkey: str) -> NodeEntry | None:
        return next((node for node in self.nodes if node.pubkey == pubkey), None)

    def named(self, name: str) -> NodeEntry | None:
        return next((node for node in self.nodes if node.name == name), None)

    @property
    def organisations(self) -> list[str]:
        return sorted({node.organisation for node in self.nodes})

    @property
    def networks(self) -> list[str]:
        """Every network a partner's node may come from: geth's ``--netrestrict``."""
        nets = [ipaddress.ip_network(net) for node in self.nodes for net in node.networks]
        merged = [*ipaddress.collapse_addresses(n for n in nets if n.version == 4),
                  *ipaddress.collapse_addresses(n for n in nets if n.version == 6)]
        return [str(net) for net in merged]

    @property
    def hosts(self) -> list[str]:
        """Every partner host's address: what the firewall opens P2P to."""
        ips = {ipaddress.ip_address(node.host) for node in self.nodes}
        return [str(ip) for ip in sorted(ips, key=lambda ip: (ip.version, ip))]

    def static_peers(self, me: NodeEntry) -> list[NodeEntry]:
        """Whom ``me`` dials by address and keeps dialling: every other validator (signers
        must meet to seal, whatever discovery knows)."""
        return [node for node in self.validators if node.name != me.name]

    def body(self) -> dict[str, Any]:
        """The manifest as written, without its signature."""
        return {
            "kind": MANIFEST_KIND, "format": FORMAT, "version": self.version,
            "issued": self.issued, "network_name": self.network_name,
            "chain_id": self.chain_id, "genesis_hash": self.genesis_hash,
            "block_period": self.block_period, "coordinator": self.coordinator,
            "organisations": self.organisations, "networks": self.networks,
            "bootnodes": [node.enode for node in self.bootnodes],
            "nodes": [node.to_json() for node in self.nodes],
        }


def canonical(body: Mapping[str, Any]) -> bytes:
    """The bytes the signature covers: the body as JSON with sorted keys and no spaces."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed(manifest: Manifest, coordinator: LocalAccount) -> dict[str, Any]:
    """The manifest file's content: the body plus an EIP-191 signature of its canonical form."""
    if coordinator.address != manifest.coordinator:
        raise ManifestError(f"The manifest names the coordinator {manifest.coordinator}, but the "
                            f"key at hand is {coordinator.address}.")
    body = manifest.body()
    signature = coordinator.sign_message(encode_defunct(primitive=canonical(body))).signature
    return {**body, "signature": "0x" + bytes(signature).hex()}


def write_manifest(path: Path, content: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    tmp.replace(path)


def load_manifest(path: Path, signer: str | None) -> Manifest:
    """The manifest at ``path`` if the coordinator ``signer`` signed exactly this content."""
    if signer is None:
        raise ManifestError("MANIFEST_SIGNER is not set: give the coordinator's address (from "
                            "its export), so that only a manifest it signed is used.")
    content = _read_json(path, "network manifest")
    if content.get("kind") != MANIFEST_KIND or content.get("format") != FORMAT:
        raise ManifestError(f"{path} is not a PilotChain network manifest (format {FORMAT}).")
    body = {key: value for key, value in content.items() if key != "signature"}
    try:
        by = Account.recover_message(encode_defunct(primitive=canonical(body)),
                                     signature=content["signature"])
    except (KeyError, ValueError, TypeError):
        by = None
    if by != to_checksum_address(signer):
        raise ManifestError(
            f"{path} is not signed by the coordinator {to_checksum_address(signer)} "
            "(MANIFEST_SIGNER): it was changed after signing or signed by another key; ask the "
            "coordinator for the signed file."
        )
    try:
        manifest = _manifest_from_json(body)
    except (KeyError, TypeError, ValueError) as error:
        raise ManifestError(f"{path} is incomplete ({error!s}); ask the coordinator for a "
                            "current one.") from None
    if manifest.body() != body:
        raise ManifestError(f"{path} was written by another version of PilotChain (its "
                            "lists differ from what this one derives from its nodes); run the "
                            "coordinator's version.")
    return manifest


def _manifest_from_json(body: Mapping[str, Any]) -> Manifest:
    return Manifest(int(body["version"]), str(body["network_name"]), int(body["chain_id"]),
                    str(body["genesis_hash"]), int(body["block_period"]),
                    checked_address(body["coordinator"], "coordinator"), str(body["issued"]),
                    tuple(node_from_json(node) for node in body["nodes"]))


def check_for_host(manifest: Manifest, path: Path, settings: ChainSettings) -> dict[str, Any]:
    """Refuse to start a node on the wrong chain: the manifest's chain id must be CHAIN_ID and
    genesis.json's, and genesis.json must hash to the manifest's genesis hash. Returns the
    genesis."""
    if manifest.chain_id != settings.chain_id:
        raise ManifestError(
            f"{path} is for chain id {manifest.chain_id}, but CHAIN_ID is {settings.chain_id}: "
            f"set CHAIN_ID={manifest.chain_id} in .env."
        )
    try:
        genesis = read_genesis(settings.genesis_file)
    except FileNotFoundError:
        raise ManifestError(f"{settings.genesis_file} is missing: copy the coordinator's "
                            "genesis.json there (GENESIS_FILE).") from None
    except json.JSONDecodeError:
        raise ManifestError(f"{settings.genesis_file} is not JSON: copy the coordinator's "
                            "genesis.json again.") from None
    actual = genesis_hash(genesis)
    if actual != manifest.genesis_hash or genesis["config"]["chainId"] != manifest.chain_id:
        raise ManifestError(
            f"{settings.genesis_file} is not this network's genesis: it hashes to "
            f"{actual[:14]}…, {path.name} (version {manifest.version}) names "
            f"{manifest.genesis_hash[:14]}…; copy the coordinator's genesis.json."
        )
    return genesis


def check_not_older(manifest: Manifest, path: Path, accepted: int | None) -> None:
    """A host never goes back to an older manifest (one with a partner since removed)."""
    if accepted is not None and manifest.version < accepted:
        raise ManifestError(
            f"{path} is version {manifest.version}, older than version {accepted} this host "
            "already runs; ask the coordinator for the current one."
        )


def host_manifest(settings: ChainSettings) -> Manifest:
    """The manifest, checked as a node checks it before it starts."""
    manifest = load_manifest(settings.manifest_file, settings.manifest_signer)
    check_for_host(manifest, settings.manifest_file, settings)
    return manifest


def local_nodes(manifest: Manifest, keys: KeyStore) -> list[NodeEntry]:
    """The manifest's nodes whose keys are on this host."""
    found_here = []
    for role in NODE_ROLES:
        if keys.has_role(role):
            node = manifest.node_with_key(keys.node_pubkey(role))
            if node is not None:
                found_here.append(node)
    return found_here


# -- the coordinator's work ---------------------------------------------------------------------

def found(exports: Sequence[Export], settings: ChainSettings, coordinator: str,
          *, start: int) -> tuple[dict[str, Any], Manifest]:
    """``genesis.json`` (the founding validators as signers, the apps' accounts funded) and
    manifest version 1 from the founding organisations' exports.

    Block 1 may be sealed from ``start`` (unix time) on. Founding validators started together
    after that would each seal a block 1 of their own at once, and Clique keeps such equal
    forks (each signer prefers its own and may not sign the next): started before it, they
    meet first and the signer in turn seals block 1 for all.
    """
    nodes = _nodes_of(exports)
    apps = [export for export in exports if export.role == "apps"]
    if len(apps) != 1:
        raise ManifestError(
            f"The founding exports hold {len(apps)} apps exports; genesis funds the faucet, "
            "bridge and operator of exactly one (the grid operator's 'keys new --role apps')."
        )
    signers = [node.signer for node in nodes if node.signer]
    funded = {name: apps[0].accounts[name] for name in FUNDED_ACCOUNTS}
    genesis = build_genesis(settings, signers, funded,
                            timestamp=max(0, start - settings.block_period))
    manifest = Manifest(1, settings.network_name, settings.chain_id, genesis_hash(genesis),
                        settings.block_period, coordinator, _now(), tuple(nodes))
    _check_network(manifest)
    return genesis, manifest


def update(current: Manifest, add: Sequence[Export] = (), remove: Sequence[str] = ()
           ) -> Manifest:
    """The next version: nodes added, replaced (an export of a node's name: a new address or
    key) or removed by name."""
    unknown = [name for name in remove if current.named(name) is None]
    if unknown:
        raise ManifestError(f"Version {current.version} has no node named "
                            f"{', '.join(unknown)}; nothing was written.")
    incoming = {node.name: node for node in _nodes_of(add)}
    nodes = [incoming.pop(node.name, node) for node in current.nodes if node.name not in remove]
    nodes.extend(incoming.values())
    if not add and not remove:
        raise ManifestError("Nothing to change: give --add EXPORT or --remove NAME.")
    manifest = replace(current, version=current.version + 1, issued=_now(), nodes=tuple(nodes))
    _check_network(manifest)
    return manifest


def _nodes_of(exports: Sequence[Export]) -> list[NodeEntry]:
    """The node entries of ``exports`` (apps and coordinator exports carry none)."""
    return [export.node for export in exports if export.node is not None]


def _check_network(manifest: Manifest) -> None:
    """What makes a network: unique names, keys, signers and endpoints; a validator; and
    bootnodes of at least two organisations, so discovery outlives one organisation's outage."""
    nodes = manifest.nodes
    for what, values in (("node name", [n.name for n in nodes]),
                         ("node key", [n.pubkey for n in nodes]),
                         ("signer", [n.signer for n in nodes if n.signer]),
                         ("endpoint", [f"{n.host}:{port}/{proto}" for n in nodes
                                       for proto, port in n.ports.items()])):
        twice = sorted({value for value in values if values.count(value) > 1})
        if twice:
            raise ManifestError(f"Two nodes share the {what} {twice[0]}; each node needs its "
                                "own (one export per node).")
    if not manifest.validators:
        raise ManifestError("The network has no validator: add at least one validator export.")
    bootnode_orgs = {node.organisation for node in manifest.bootnodes}
    if len(bootnode_orgs) < 2:
        raise ManifestError(
            f"Bootnodes are run by {len(bootnode_orgs)} organisation(s); the network needs "
            "bootnodes of at least two, so that discovery survives one organisation's outage "
            "(add a 'keys new --role bootnode' export of another organisation)."
        )


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"The {what} {path} is missing.") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ManifestError(f"The {what} {path} is not JSON.") from None
    if not isinstance(content, dict):
        raise ManifestError(f"The {what} {path} is not a JSON object.")
    return content


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
