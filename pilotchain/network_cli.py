"""The commands of a network of several organisations' hosts (docs/deployment.md).

``keys new`` and ``keys export`` run on each organisation's host and print only what partners
need; ``network found`` and ``network update`` run at the coordinator, which assembles the
exports into genesis.json and the signed manifest; ``network check``, ``status`` and
``firewall`` run on any host holding the manifest.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pilotchain.config import ChainSettings
from pilotchain.firewall import nft_rules
from pilotchain.genesis import write_genesis
from pilotchain.keys import APP_ACCOUNTS, HOST_ROLES, KeysError, KeyStore
from pilotchain.manifest import (
    NODE_ROLES,
    Export,
    Manifest,
    ManifestError,
    accounts_export,
    coordinator_export,
    found,
    host_manifest,
    load_manifest,
    local_nodes,
    node_export,
    read_export,
    signed,
    update,
    write_manifest,
)
from pilotchain.netstatus import describe, network_status
from pilotchain.sealing import serve_exporter

Commands = Any  # argparse's private _SubParsersAction
KEY_ROLES = (*HOST_ROLES, "coordinator")


def add_network_commands(sub: Commands, command: Any, group: Any) -> None:
    """``keys new|export`` and ``network found|update|check|status|firewall``."""
    keys = group(sub, "keys", "This host's keys in a network of several organisations.")
    new = command(keys, "new", cmd_keys_new,
                  "Create this host's keys for a role and print its export: only what partners "
                  "need (enode public key, signer address, public address and port).")
    export = command(keys, "export", cmd_keys_export,
                     "Print the export of this host's keys for a role again (e.g. after the "
                     "host's address changed).")
    for cmd in (new, export):
        cmd.add_argument("--role", choices=KEY_ROLES, required=True)
        cmd.add_argument("--org", required=True, metavar="NAME",
                         help="the organisation, e.g. uni-a (lowercase, digits, dashes)")
        cmd.add_argument("--public-ip", metavar="IP",
                         help="the address partners reach this host at (node roles)")
        cmd.add_argument("--port", type=int, metavar="N",
                         help="devp2p port, TCP and UDP (default 30303; a bootnode's UDP "
                              "30301)")
        cmd.add_argument("--network", action="append", default=[], metavar="CIDR",
                         help="a network the organisation's hosts use (repeat; default the "
                              "host's address alone): partners admit peers from these")
        cmd.add_argument("--name", help="the node's name (default <org>-<role>)")
        cmd.add_argument("--url", help="an RPC node's public HTTPS URL, for network status")
        cmd.add_argument("--out", type=Path, metavar="FILE",
                         help="write the export to FILE instead of printing it")
    network = group(sub, "network",
                    "A network of several organisations: manifest, checks, status, firewall.")
    found_cmd = command(network, "found", cmd_network_found,
                        "Coordinator: write genesis.json and the signed network manifest "
                        "(version 1) from the founding organisations' exports.")
    found_cmd.add_argument("exports", nargs="+", type=Path, metavar="EXPORT")
    found_cmd.add_argument("--start-in", type=int, default=3600, metavar="SECONDS",
                           help="when block 1 may be sealed, from now (default one hour): "
                                "start every founding validator before then")
    update_cmd = command(network, "update", cmd_network_update,
                         "Coordinator: sign the manifest's next version, with nodes added or "
                         "replaced (--add EXPORT) or removed (--remove NAME).")
    update_cmd.add_argument("--add", action="append", default=[], type=Path, metavar="EXPORT")
    update_cmd.add_argument("--remove", action="append", default=[], metavar="NAME")
    command(network, "check", cmd_network_check,
            "Check the manifest as a node does before it starts: the coordinator's signature, "
            "the chain id and genesis.json.")
    status = command(network, "status", cmd_network_status,
                     "Every node of the manifest: reachable, peer, signer, last sealed block, "
                     "votes pending, how many signers may fail, clock warnings.")
    status.add_argument("--ipc", metavar="PATH",
                        help="this host's node to ask (default: its validator's or RPC node's "
                             "geth.ipc, else RPC_URL)")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    exporter = command(network, "exporter", cmd_network_exporter,
                       "Serve who seals as Prometheus metrics (per signer sealing or not, its "
                       "last block, signers needed, the head's age) until stopped.")
    exporter.add_argument("--ipc", metavar="PATH",
                          help="the node to read (default: this host's validator's or RPC "
                               "node's geth.ipc; the clique namespace needs IPC)")
    exporter.add_argument("--listen", metavar="HOST:PORT",
                          help="where /metrics answers (default 127.0.0.1:"
                               "<SEALING_EXPORTER_PORT>)")
    firewall = command(network, "firewall", cmd_network_firewall,
                       "Print the nftables rules for this host's nodes: P2P open only to the "
                       "partners' hosts (load them with 'nft -f').")
    firewall.add_argument("--out", type=Path, metavar="FILE", help="write them to FILE")


# -- keys --------------------------------------------------------------------------------------

def cmd_keys_new(settings: ChainSettings, env: Mapping[str, str],
                 args: argparse.Namespace) -> int:
    keys = KeyStore(settings.keys_dir)
    export = _export(keys, args, check_only=True)  # refuse bad arguments before writing keys
    created = keys.create_role(args.role)
    export = _export(keys, args)
    print(f"Created {', '.join(created)} in {keys.directory}; nothing secret leaves it.",
          file=sys.stderr)
    return _emit(export, args.out)


def cmd_keys_export(settings: ChainSettings, env: Mapping[str, str],
                    args: argparse.Namespace) -> int:
    keys = KeyStore(settings.keys_dir)
    if not keys.has_role(args.role):
        raise KeysError(f"This host has no {args.role} keys in {keys.directory}; create them "
                        f"with 'pilotchain keys new --role {args.role}'.")
    return _emit(_export(keys, args), args.out)


def _export(keys: KeyStore, args: argparse.Namespace, *, check_only: bool = False) -> Export:
    """The export of ``args.role``; with ``check_only``, the arguments checked against a
    stand-in key (before any key is written)."""
    role = args.role
    if role == "coordinator":
        return coordinator_export(args.org, "0x" + "00" * 20 if check_only
                                  else keys.role("coordinator").address)
    if role == "apps":
        accounts = {name: "0x" + "00" * 20 if check_only else keys.role(name).address
                    for name in APP_ACCOUNTS}
        return accounts_export(args.org, accounts, args.name)
    if not args.public_ip:
        raise ManifestError(f"A {role} export needs --public-ip: the address partners reach "
                            "this host at.")
    pubkey = "00" * 64 if check_only else keys.node_pubkey(role)
    signer = None
    if role == "validator":
        signer = "0x" + "00" * 20 if check_only else keys.role("validator").address
    return node_export(args.org, role, pubkey=pubkey, host=args.public_ip, port=args.port,
                       networks=args.network, name=args.name, signer=signer, url=args.url)


def _emit(export: Export, out: Path | None) -> int:
    text = json.dumps(export.to_json(), indent=2) + "\n"
    if out is None:
        print(text, end="")
    else:
        out.write_text(text)
        print(f"Wrote the {export.role} export of {export.name} to {out}; send it to the "
              "coordinator.", file=sys.stderr)
    return 0


# -- the coordinator --------------------------------------------------------------------------

def cmd_network_found(settings: ChainSettings, env: Mapping[str, str],
                      args: argparse.Namespace) -> int:
    for path in (settings.genesis_file, settings.manifest_file):
        if path.exists():
            raise ManifestError(f"{path} exists: a network is founded once (a new genesis is a "
                                "new chain); move it away to found another.")
    coordinator = KeyStore(settings.keys_dir).role("coordinator").unlock()
    start = int(time.time()) + max(0, args.start_in)
    genesis, manifest = found([read_export(path) for path in args.exports], settings,
                              coordinator.address, start=start)
    write_genesis(settings.genesis_file, genesis)
    write_manifest(settings.manifest_file, signed(manifest, coordinator))
    print(f"Wrote {settings.genesis_file} (genesis {manifest.genesis_hash}, "
          f"{len(manifest.validators)} founding signers) and {settings.manifest_file} (version 1, "
          f"{len(manifest.nodes)} nodes of {len(manifest.organisations)} organisations), signed "
          f"by {coordinator.address}. Send both files to every organisation; they set "
          f"MANIFEST_SIGNER={coordinator.address} and start their validators before "
          f"{datetime.fromtimestamp(start, UTC):%Y-%m-%d %H:%M:%S} UTC, when block 1 may be "
          "sealed.")
    return 0


def cmd_network_update(settings: ChainSettings, env: Mapping[str, str],
                       args: argparse.Namespace) -> int:
    coordinator = KeyStore(settings.keys_dir).role("coordinator").unlock()
    current = load_manifest(settings.manifest_file, coordinator.address)
    manifest = update(current, [read_export(path) for path in args.add], args.remove)
    write_manifest(settings.manifest_file, signed(manifest, coordinator))
    print(f"Wrote {settings.manifest_file} version {manifest.version}: "
          f"{_changes(current, manifest)}. Send it to every organisation; each runs its roles' "
          "./scripts/up again to apply it.")
    return 0


def _changes(old: Manifest, new: Manifest) -> str:
    before = {node.name: node for node in old.nodes}
    after = {node.name: node for node in new.nodes}
    parts = [f"added {name}" for name in after if name not in before]
    parts += [f"changed {name}" for name in after
              if name in before and after[name] != before[name]]
    parts += [f"removed {name}" for name in before if name not in after]
    return ", ".join(parts) or "no node changed"


# -- any host ----------------------------------------------------------------------------------

def cmd_network_check(settings: ChainSettings, env: Mapping[str, str],
                      args: argparse.Namespace) -> int:
    manifest = host_manifest(settings)
    here = local_nodes(manifest, KeyStore(settings.keys_dir))
    print(f"{settings.manifest_file} is version {manifest.version}, signed by the coordinator "
          f"{manifest.coordinator}, for chain id {manifest.chain_id} with genesis "
          f"{manifest.genesis_hash} (= {settings.genesis_file}): {len(manifest.nodes)} nodes of "
          f"{len(manifest.organisations)} organisations"
          + (f"; this host runs {', '.join(n.name for n in here)}." if here else
             "; none of them has its key on this host."))
    return 0


def cmd_network_status(settings: ChainSettings, env: Mapping[str, str],
                       args: argparse.Namespace) -> int:
    manifest = host_manifest(settings)
    keys = KeyStore(settings.keys_dir)
    url, role = _status_endpoint(settings, args.ipc)
    this = None
    if role is not None and keys.has_role(role):
        this = manifest.node_with_key(keys.node_pubkey(role))
    status = network_status(manifest, url, this=this, admin="://" not in url)
    if args.json:
        print(json.dumps(status.to_json(), indent=2))
    else:
        print("\n".join(describe(status)))
    return 0


def cmd_network_exporter(settings: ChainSettings, env: Mapping[str, str],
                         args: argparse.Namespace) -> int:
    url, _ = _status_endpoint(settings, args.ipc)
    listen = args.listen or f"127.0.0.1:{settings.sealing_exporter_port}"
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ManifestError(f"--listen takes HOST:PORT, not {listen!r}.")
    server, _thread = serve_exporter(url, host, int(port))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(f"Serving the sealing read through {url} at http://{host}:{port}/metrics.",
          flush=True)
    stop.wait()
    server.shutdown()
    return 0


def _status_endpoint(settings: ChainSettings, ipc: str | None) -> tuple[str, str | None]:
    """Which node to ask, and its role: the one named, else this host's validator or RPC
    node (over IPC, which also answers admin_peers), else RPC_URL."""
    if ipc:
        name = Path(ipc).parent.name
        return ipc, name if name in NODE_ROLES else None
    for role in ("validator", "rpc"):
        socket = settings.nodes_dir / role / "geth.ipc"
        if socket.is_socket():
            return str(socket), role
    return settings.rpc_url, None


def cmd_network_firewall(settings: ChainSettings, env: Mapping[str, str],
                         args: argparse.Namespace) -> int:
    manifest = host_manifest(settings)
    here = local_nodes(manifest, KeyStore(settings.keys_dir))
    if not here:
        raise ManifestError(f"None of the nodes in {settings.manifest_file} has its key on this "
                            f"host ({settings.keys_dir}): no rules to write.")
    proxy = any(node.role == "rpc" for node in here) and settings.tls_cert_file is not None
    rules = nft_rules(manifest, here, https_port=settings.tls_port if proxy else None,
                      local_only=(settings.rpc_port, settings.ws_port) if proxy else ())
    if args.out is None:
        print(rules, end="")
    else:
        args.out.write_text(rules)
        print(f"Wrote the nftables rules for {', '.join(n.name for n in here)} to {args.out}; "
              f"load them with 'nft -f {args.out}'.", file=sys.stderr)
    return 0
