"""``pilotchain network status``: every node of the manifest as one host sees it.

Seen through one node of this host's own organisation (its IPC socket, or the organisation's
RPC node): the head, the signers and the votes cast on chain, the last block each validator
sealed; per manifest node whether this host reaches it (TCP to its devp2p port, a discovery
PING to a bootnode) and whether it is this node's peer; how many signers may still fail before
sealing stops; and whether the clocks agree with the block times.
"""

from __future__ import annotations

import itertools
import socket
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.types import RPCEndpoint

from pilotchain.chain import batch_call, call, connect
from pilotchain.discovery import ping
from pilotchain.errors import ChainError
from pilotchain.manifest import Manifest, NodeEntry

# Blocks read back from the head for the last block each signer sealed and its timing.
WINDOW = 256
# How far a block's stamp may stray from the expected before it says something about a clock.
CLOCK_TOLERANCE = 2.0
REACH_TIMEOUT = 2.0


@dataclass(frozen=True)
class Header:
    """What the judgements need of a block: its number, stamp and sealer."""

    number: int
    timestamp: int
    signer: str


@dataclass
class NodeStatus:
    """One manifest node as this host sees it."""

    name: str
    organisation: str
    role: str
    address: str
    this_node: bool = False
    reachable: bool | None = None
    peer: bool | None = None
    signer: bool | None = None
    last_sealed: int | None = None
    last_sealed_age: float | None = None
    head: int | None = None
    peers: int | None = None


@dataclass(frozen=True)
class Vote:
    """A vote cast on chain that has not passed yet."""

    address: str
    name: str | None
    authorize: bool
    votes: int
    needed: int
    by: list[str]


@dataclass
class NetworkStatus:
    manifest_version: int
    chain_id: int
    seen_from: str
    head: int
    head_age: float
    peers: int | None
    signers: list[str]
    needed: int
    may_fail: int
    not_sealing: list[str]
    nodes: list[NodeStatus]
    votes: list[Vote]
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def network_status(manifest: Manifest, url: str, *, this: NodeEntry | None,
                   admin: bool, now: Callable[[], float] = time.time) -> NetworkStatus:
    """The status of every manifest node, read through the node at ``url`` (``this``, if it
    is one of the manifest's; ``admin``: whether ``url`` answers admin_peers, i.e. is IPC)."""
    w3 = connect(url)
    head_block = call(url, "Reading the head", lambda: w3.eth.get_block("latest"))
    head = int(head_block["number"])
    signers: list[str] = [to_checksum_address(s) for s in _rpc(w3, url, "clique_getSigners", [])]
    snapshot = _rpc(w3, url, "clique_getSnapshot", [])
    headers = recent_headers(w3, url, head)
    connected = _peer_keys(w3, url) if admin else None
    others = [node for node in manifest.nodes if node is not this]
    reached = reachability(others)
    public = public_heads([node for node in others if node.url])
    observed = now()
    by_signer = {node.signer: node for node in manifest.validators}
    last = last_sealed(headers)
    nodes = []
    for node in manifest.nodes:
        status = NodeStatus(node.name, node.organisation, node.role, node.address,
                            this_node=node is this, reachable=reached.get(node.name))
        if connected is not None and node is not this:
            status.peer = node.pubkey in connected
        if node.role == "validator":
            status.signer = node.signer in signers
            if node.signer in last:
                status.last_sealed = last[node.signer].number
                status.last_sealed_age = observed - last[node.signer].timestamp
        if node is this:
            status.head, status.peers = head, None if connected is None else len(connected)
        elif node.name in public:
            status.head, status.peers = public[node.name]
        nodes.append(status)
    needed = len(signers) // 2 + 1
    silent = not_sealing(signers, headers, head)
    names: dict[str, str] = {address: by_signer[address].name if address in by_signer
                             else address for address in signers}
    report = NetworkStatus(
        manifest.version, manifest.chain_id, this.name if this else url, head,
        observed - int(head_block["timestamp"]),
        None if connected is None else len(connected), signers, needed,
        max(0, len(signers) - needed - len(silent)), [names[s] for s in silent], nodes,
        pending_votes(snapshot, signers, by_signer))
    report.warnings = clock_warnings(headers, manifest.block_period, observed, names)
    if silent:
        report.warnings.append(
            f"{', '.join(names[s] for s in silent)} sealed nothing in the last "
            f"{2 * len(signers) + 2} blocks: down, cut off, or its clock is wrong.")
    return report


def _rpc(w3: Web3, url: str, method: str, params: list[Any]) -> Any:
    return call(url, f"Calling {method}",
                lambda: w3.manager.request_blocking(RPCEndpoint(method), params))


def recent_headers(w3: Web3, url: str, head: int, window: int = WINDOW) -> list[Header]:
    """The last ``window`` blocks up to ``head``, oldest first, with their sealers (two
    batched requests per block, one round trip)."""
    numbers = list(range(max(1, head - window + 1), head + 1))
    if not numbers:
        return []
    requests = [(method, [hex(n), False] if method == "eth_getBlockByNumber" else [hex(n)])
                for n in numbers for method in ("eth_getBlockByNumber", "clique_getSigner")]
    replies = batch_call(w3, url, "Reading the recent blocks", requests)
    return [Header(n, int(replies[2 * i]["timestamp"], 16), to_checksum_address(replies[2 * i + 1]))
            for i, n in enumerate(numbers)]


def _peer_keys(w3: Web3, url: str) -> set[str]:
    """The enode public keys of the node's peers (admin_peers, IPC only)."""
    peers = _rpc(w3, url, "admin_peers", [])
    return {str(peer["enode"])[len("enode://"):][:128] for peer in peers}


def reachability(nodes: Sequence[NodeEntry]) -> dict[str, bool]:
    """Whether this host reaches each node: its devp2p port over TCP, or for a bootnode a
    discovery PING. In parallel: an unreachable node costs the whole timeout."""
    def reach(node: NodeEntry) -> bool:
        if node.role == "bootnode":
            return ping(node.host, node.port, node.pubkey, timeout=REACH_TIMEOUT)
        try:
            with socket.create_connection((node.host, node.port), timeout=REACH_TIMEOUT):
                return True
        except OSError:
            return False

    if not nodes:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
        return dict(zip([n.name for n in nodes], pool.map(reach, nodes), strict=True))


def public_heads(nodes: Sequence[NodeEntry]) -> dict[str, tuple[int, int]]:
    """The head and peer count of each RPC node that serves participants at a public URL
    (HTTPS through its proxy); those that do not answer are left out."""
    def ask(node: NodeEntry) -> tuple[int, int] | None:
        url = str(node.url)
        try:
            w3 = connect(url, timeout=REACH_TIMEOUT)
            return (call(url, "Reading the head", lambda: w3.eth.block_number),
                    call(url, "Counting peers", lambda: w3.net.peer_count))
        except ChainError:
            return None

    if not nodes:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(nodes))) as pool:
        answers = dict(zip([n.name for n in nodes], pool.map(ask, nodes), strict=True))
    return {name: answer for name, answer in answers.items() if answer is not None}


def last_sealed(headers: Sequence[Header]) -> dict[str, Header]:
    """Each signer's most recent block among ``headers``."""
    return {header.signer: header for header in headers}


def not_sealing(signers: Sequence[str], headers: Sequence[Header], head: int) -> list[str]:
    """Signers with no block among the last 2N+2: in turn, each seals one block in N, so one
    missing from twice that many is not taking part (or its blocks lose every race)."""
    span = 2 * len(signers) + 2
    if len(headers) < span:
        return []  # a young chain: too few blocks to tell
    recent = {h.signer for h in headers if h.number > head - span}
    return [signer for signer in signers if signer not in recent]


def pending_votes(snapshot: dict[str, Any], signers: Sequence[str],
                  by_signer: dict[str | None, NodeEntry]) -> list[Vote]:
    """The votes cast on chain that have not passed, with how many more are needed."""
    needed = len(signers) // 2 + 1
    named = {node.signer: node.name for node in by_signer.values()}
    votes: dict[tuple[str, bool], list[str]] = {}
    for vote in snapshot.get("votes") or []:
        key = (to_checksum_address(vote["address"]), bool(vote["authorize"]))
        voter = to_checksum_address(vote["signer"])
        votes.setdefault(key, []).append(named.get(voter, voter))
    return [Vote(address, named.get(address), authorize, len(by), needed, by)
            for (address, authorize), by in sorted(votes.items())]


def clock_warnings(headers: Sequence[Header], period: int, now: float,
                   names: dict[str, str]) -> list[str]:
    """What the block stamps say about clocks.

    Clique stamps a block max(parent + period, the sealer's clock) and nodes refuse blocks
    stamped in their future. So a head stamped ahead of this host's clock means this clock is
    behind (or the sealer's ahead); a signer whose blocks sit well over a period after their
    parents, while the others' sit at one period, stamps them with a clock running ahead.
    """
    warnings = []
    if headers:
        head = headers[-1]
        ahead = head.timestamp - now
        if ahead > CLOCK_TOLERANCE:
            warnings.append(
                f"Block {head.number} (sealed by {names.get(head.signer, head.signer)}) is "
                f"stamped {ahead:.0f} s ahead of this host's clock: this host's clock is behind "
                "or the sealer's is ahead; check time synchronisation (chrony, "
                "systemd-timesyncd) on both.")
        elif now - head.timestamp > 3 * period + CLOCK_TOLERANCE + 10:
            warnings.append(f"The head (block {head.number}) is {now - head.timestamp:.0f} s "
                            "old: sealing has stopped, or this host's clock is ahead.")
    gaps: dict[str, list[int]] = {}
    for parent, child in itertools.pairwise(headers):
        gaps.setdefault(child.signer, []).append(child.timestamp - parent.timestamp)
    typical = {signer: statistics.median(found) for signer, found in gaps.items()}
    for signer, median in sorted(typical.items()):
        others = [m for s, m in typical.items() if s != signer]
        if (median - period > CLOCK_TOLERANCE and others
                and statistics.median(others) - period <= CLOCK_TOLERANCE):
            warnings.append(
                f"{names.get(signer, signer)} stamps its blocks a median {median:.0f} s after "
                f"their parents where the period is {period} s: its clock runs about "
                f"{median - period:.0f} s ahead, and its partners refuse blocks from their "
                "future; check its time synchronisation.")
    return warnings


def describe(status: NetworkStatus) -> list[str]:
    """The status as lines for a terminal."""
    lines = [
        f"Network manifest version {status.manifest_version}, chain id {status.chain_id}, "
        f"seen from {status.seen_from}: head {status.head}, stamped {status.head_age:.0f} s "
        f"ago" + ("" if status.peers is None else f", {status.peers} peer(s)") + ".",
        f"Signers: {len(status.signers)}; sealing needs {status.needed} of them, so "
        f"{status.may_fail} more may fail before sealing stops"
        + (f" ({', '.join(status.not_sealing)} not sealing now)." if status.not_sealing
           else "."),
    ]
    headers = ("node", "organisation", "role", "address", "reachable", "peer", "signer",
               "last sealed", "head")
    rows = [headers]
    for node in status.nodes:
        sealed = "-" if node.last_sealed is None else \
            f"{node.last_sealed} ({node.last_sealed_age:.0f} s ago)"
        head = "-" if node.head is None else str(node.head) + (
            "" if node.peers is None else f" ({node.peers} peers)")
        rows.append((node.name, node.organisation, node.role, node.address,
                     "this node" if node.this_node else _yes_no(node.reachable),
                     _yes_no(node.peer), _yes_no(node.signer), sealed, head))
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    for vote in status.votes:
        verb = "add" if vote.authorize else "remove"
        lines.append(f"Pending vote to {verb} {vote.name or vote.address} ({vote.address}): "
                     f"{vote.votes} of the {vote.needed} needed, by {', '.join(vote.by)}.")
    if not status.votes:
        lines.append("No vote pending.")
    lines += [f"WARNING: {warning}" for warning in status.warnings]
    return lines


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")

