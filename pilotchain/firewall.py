"""nftables rules for one host of the network, generated from the network manifest.

They open this host's devp2p and discovery ports only to the partners' hosts the manifest
lists, open the RPC node's HTTPS proxy to everyone (participants), and close geth's HTTP and
WebSocket ports (loopback only anyway) to the outside. Every other port is left to the host's
own rules: the table is PilotChain's alone, replaced whole each time it is loaded.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from pilotchain.manifest import Manifest, NodeEntry

TABLE = "pilotchain"


def nft_rules(manifest: Manifest, local: Sequence[NodeEntry], *, https_port: int | None = None,
              local_only: Sequence[int] = ()) -> str:
    """The ruleset (``nft -f`` input) for the host running the nodes ``local``; with
    ``https_port``, the RPC node's proxy; ``local_only``, ports no one else may reach."""
    hosts = [ipaddress.ip_address(host) for host in manifest.hosts]
    v4 = [str(ip) for ip in hosts if ip.version == 4]
    v6 = [str(ip) for ip in hosts if ip.version == 6]
    names = ", ".join(node.name for node in local) or "no node"
    lines = [
        "#!/usr/sbin/nft -f",
        f"# PilotChain firewall for {names}: network manifest version {manifest.version}",
        f"# (chain id {manifest.chain_id}), written by 'pilotchain network firewall'. It opens",
        "# the nodes' P2P ports only to the partners' hosts in the manifest; every other port is",
        "# left to this host's own rules. Load it with 'nft -f FILE'; loading again replaces it.",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        *_set("partners4", "ipv4_addr", v4),
        *_set("partners6", "ipv6_addr", v6),
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy accept;",
        '\t\tiif "lo" accept',
    ]
    for protocol, port in sorted({(p, n) for node in local for p, n in node.ports.items()}):
        lines += [f"\t\t{protocol} dport {port} ip saddr @partners4 accept",
                  f"\t\t{protocol} dport {port} ip6 saddr @partners6 accept",
                  f"\t\t{protocol} dport {port} drop"]
    if https_port is not None:
        lines.append(f"\t\ttcp dport {https_port} accept")
    if local_only:
        ports = ", ".join(str(port) for port in sorted(set(local_only)))
        lines.append(f"\t\ttcp dport {{ {ports} }} drop")
    return "\n".join([*lines, "\t}", "}", ""])


def _set(name: str, kind: str, elements: Sequence[str]) -> list[str]:
    body = [f"\tset {name} {{", f"\t\ttype {kind}"]
    if elements:
        body.append(f"\t\telements = {{ {', '.join(elements)} }}")
    return [*body, "\t}"]
