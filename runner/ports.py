"""Ports for the native stack: the fixed layout of ``./scripts/up`` and free ports for tests."""

from __future__ import annotations

import random
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pilotchain.config import ChainSettings
from pilotchain.errors import NetworkError


def free_port() -> int:
    """A port free for TCP and UDP (geth uses both for p2p), for a test or a benchmark."""
    return free_port_block(1)


def isolated_stack_env(home: Path, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` (the caller's environment) with settings that keep a ``./scripts/up`` stack
    apart from a developer's own: its keys, genesis and data under ``home``, every port free
    (for the tests and benchmarks that start a whole stack)."""
    return {
        **base,
        "KEYS_DIR": str(home / "keys"),
        "GENESIS_FILE": str(home / "genesis.json"),
        "NATIVE_DATA_DIR": str(home / "data"),
        "RPC_HTTP_PORT": str(free_port()),
        "RPC_WS_PORT": str(free_port()),
        "BOOTNODE_PORT": str(free_port()),
        "P2P_BASE_PORT": str(free_port_block(5)),
        "AUTHRPC_BASE_PORT": str(free_port_block(5)),
        "GETH_METRICS_BASE_PORT": str(free_port_block(5)),
        "BLOCK_PERIOD": "1",
        **stack_service_ports(),
    }


def stack_service_ports() -> dict[str, str]:
    """Free ports for the services ``./scripts/up`` starts beside the chain."""
    return {"REDIS_PORT": str(free_port()), "FAUCET_PORT": str(free_port()),
            "BRIDGE_METRICS_PORT": str(free_port()), "INGEST_METRICS_PORT": str(free_port()),
            "INGEST_HTTP_PORT": str(free_port()), "MQTT_PORT": str(free_port()),
            "INGEST_MQTT_METRICS_PORT": str(free_port()),
            "CLOSER_METRICS_PORT": str(free_port()), "PORTAL_PORT": str(free_port()),
            "FAUCET_METRICS_PORT": str(free_port()), "PORTAL_METRICS_PORT": str(free_port()),
            "SEALING_EXPORTER_PORT": str(free_port()), "PROMETHEUS_PORT": str(free_port())}


def free_port_block(count: int) -> int:
    """The first of ``count`` consecutive ports free for TCP and UDP, never handed out
    before by this process.

    Taken below the kernel's ephemeral range: a port inside it can go to any outgoing
    connection (a peer dialling out, an HTTP client) before the node binds it.
    """
    ephemeral_low = _ephemeral_range()[0]
    rng = random.SystemRandom()
    for _ in range(500):
        base = rng.randrange(10_000, ephemeral_low - count)
        block = range(base, base + count)
        if _handed_out.isdisjoint(block) and all(
                port_is_free(port, kind) for port in block
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM)):
            _handed_out.update(block)
            return base
    raise NetworkError(f"No {count} consecutive free ports between 10000 and {ephemeral_low}.")


# Ports already given to a caller that may not have bound them yet.
_handed_out: set[int] = set()


def port_is_free(port: int, kind: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` can be bound now (TIME_WAIT leftovers count as free, as for Go)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


@dataclass
class Ports:
    """Where each process listens. Fixed bases for ``./scripts/up``; free ports for tests."""

    bootnode: int
    http: int
    ws: int
    p2p_base: int | None = None
    authrpc_base: int | None = None
    assigned: dict[str, dict[str, int]] = field(default_factory=dict)
    # geth's metrics: 0 switches them off (fixed layout); free ports for tests.
    metrics_base: int = 0

    @classmethod
    def from_settings(cls, settings: ChainSettings) -> Ports:
        return cls(settings.bootnode_port, settings.rpc_port, settings.ws_port,
                   settings.p2p_base_port, settings.authrpc_base_port,
                   metrics_base=settings.geth_metrics_base_port)

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port())

    def node(self, name: str, index: int) -> dict[str, int]:
        """The p2p, authrpc and metrics ports of node ``name`` (``index`` orders the fixed
        layout; metrics 0: off)."""
        if name not in self.assigned:
            if self.p2p_base is None or self.authrpc_base is None:
                self.assigned[name] = {"p2p": free_port(), "authrpc": free_port(),
                                       "metrics": free_port()}
            else:
                self.assigned[name] = {
                    "p2p": self.p2p_base + index, "authrpc": self.authrpc_base + index,
                    "metrics": self.metrics_base + index if self.metrics_base else 0}
        return self.assigned[name]


def check_port_free(port: int, setting: str, host: str = "127.0.0.1",
                    kind: int = socket.SOCK_STREAM) -> None:
    """Fail early, naming the setting, if another program holds ``port``."""
    if not port_is_free(port, kind, host):
        raise NetworkError(
            f"Port {port} on {host} is already in use by another program; stop it or choose "
            f"another port with {setting} in .env."
        )
