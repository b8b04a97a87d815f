"""The whole native stack behind ``./scripts/up``, ``down`` and ``status``.

The chain's processes first, then each service of :func:`build_services` in order, so the
shell scripts stay thin and ``status --json`` describes everything that runs.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bridge.config import BridgeSettings
from closer.config import CloserSettings
from faucet.config import FaucetSettings
from ingest.config import HttpSettings, IngestSettings, MqttSettings
from pilotchain.chain import call, connect, wait_for
from pilotchain.config import ChainSettings, MqttConnection, RedisConnection
from pilotchain.errors import NetworkError, PilotChainError
from portal.config import PortalSettings
from portal.web.config import WebSettings
from runner.bridge import BridgeService
from runner.closer import CloserService
from runner.faucet import FaucetService
from runner.hostnet import NODE_ROLES, Applied, HostNetwork
from runner.ingest import IngestHttpService, IngestMqttService, IngestService
from runner.localnet import BOOTNODE, RPC_NODE, LocalNetwork
from runner.monitoring import PrometheusService, SealingExporterService
from runner.mqtt import MqttService
from runner.portal import PortalIndexerService, PortalWebService, with_health_urls
from runner.ports import check_port_free
from runner.redis import RedisService
from runner.services import BackgroundService, MetricsSettings, Service
from runner.settlement import SettlementService
from runner.tlsproxy import TlsProxyService

# How long ./scripts/up waits for the RPC node to see a sealed block.
FIRST_BLOCK_TIMEOUT = 90.0


@dataclass(frozen=True)
class UpResult:
    services: Sequence[Service]
    started: list[str]
    created: list[str]
    first_block_seconds: float
    seconds: float
    host: Applied | None = None  # what ``up --role`` did to this host's nodes


def network(settings: ChainSettings) -> LocalNetwork:
    """The nodes this data directory runs: one organisation's roles (``up --role``) or the
    whole single-host network."""
    host = HostNetwork(settings)
    if host.roles:
        return host
    return LocalNetwork(settings, settings.geth_bin_dir)


def role_of(service: Service) -> str:
    """The host role a service belongs to: the HTTPS proxy is the RPC node's, the rest are
    the apps."""
    return RPC_NODE if isinstance(service, TlsProxyService) else "apps"


def build_services(settings: ChainSettings, env: Mapping[str, str], *,
                   monitoring: bool = False) -> list[Service]:
    """What ./scripts/up runs on top of the chain, in start order, each configured here from
    one environment snapshot (only ``up``, ``down`` and ``status`` need them); with
    ``monitoring``, the sealing exporter and Prometheus last."""
    # The services read the Redis settings (host, port, password file) from the same
    # environment, so they reach the stack's Redis without its password on a command line.
    state_dir = settings.data_dir / "pids"
    bridge, ingest = BridgeSettings.from_env(env), IngestSettings.from_env(env)
    closer, subscriber = CloserSettings.from_env(env), MqttSettings.from_env(env)
    portal_env = with_health_urls(env, bridge, ingest, closer, subscriber)
    proxy: list[Service] = []
    if settings.tls_cert_file is not None:
        proxy.append(TlsProxyService(settings, settings.data_dir / "rpc-proxy", state_dir))
    watching: list[Service] = []
    faucet, web = FaucetSettings.from_env(env), WebSettings.from_env(portal_env)
    if monitoring:
        targets: dict[str, MetricsSettings] = {"bridge": bridge, "ingest": ingest,
                                               "ingest-mqtt": subscriber, "closer": closer,
                                               "faucet": faucet, "portal": web}
        watching = [
            SealingExporterService(settings, env, state_dir),
            PrometheusService(settings, {
                **{job: scrape_address(s) for job, s in targets.items() if s.metrics_port},
                "sealing": f"127.0.0.1:{settings.sealing_exporter_port}"},
                settings.data_dir / "prometheus", state_dir),
        ]
    return [
        *proxy,
        SettlementService(settings),
        RedisService(RedisConnection.from_env(env), settings.data_dir / "redis", state_dir),
        MqttService(MqttConnection.from_env(env), settings.data_dir / "mosquitto", state_dir),
        BridgeService(bridge, env, state_dir),
        FaucetService(faucet, state_dir, env),
        IngestService(ingest, env, state_dir),
        IngestHttpService(HttpSettings.from_env(env), state_dir, env),
        IngestMqttService(subscriber, env, state_dir),
        CloserService(closer, env, state_dir),
        PortalIndexerService(PortalSettings.from_env(env), state_dir, env),
        PortalWebService(web, state_dir, portal_env),
        *watching,
    ]


def scrape_address(settings: MetricsSettings) -> str:
    """``host:port`` of a metrics endpoint as Prometheus on this machine reaches it."""
    return settings.metrics_url.removeprefix("http://")


def up(settings: ChainSettings, build: Callable[[], Sequence[Service]] = lambda: (),
       progress: Callable[[str], None] = lambda _: None) -> UpResult:
    """Create what is missing, start what is not running, wait for sealed blocks, then
    start each service ``build`` gives in order, reporting each step to ``progress``.

    The services are built after the keys exist: their settings read files ``init``
    creates (the Redis password)."""
    began = time.monotonic()
    net = network(settings)
    if isinstance(net, HostNetwork):
        raise NetworkError(
            f"{settings.data_dir} holds this host's roles ({', '.join(net.roles)}) of a network "
            "of several organisations; start them with ./scripts/up --role ROLE."
        )
    _check_binaries(net)
    created = net.init()
    if created:
        progress(f"created {', '.join(created)}")
    services = build()
    net.page_origins = page_origins(settings, services)
    to_start = [name for name in net.node_names() if not net.is_running(name)]
    _check_ports_free(net, to_start)
    started = net.start(progress)
    sealed = began
    if started:
        progress("waiting for the first sealed block")
        net.wait_for_block(1, name=net.node_names()[1], timeout=FIRST_BLOCK_TIMEOUT)
        sealed = time.monotonic()
        # A fresh RPC node joins with every peer below five and so syncs on geth's 10 s
        # cycle; on a first start it can trail the signers by that much.
        progress("waiting for the RPC node to follow")
        net.wait_for_block(1, timeout=FIRST_BLOCK_TIMEOUT)
    started += start_services(services, net, progress)
    now = time.monotonic()
    return UpResult(services, started, created, sealed - began, now - began)


def up_roles(settings: ChainSettings, roles: Sequence[str],
             build: Callable[[], Sequence[Service]] = lambda: (),
             progress: Callable[[str], None] = lambda _: None) -> UpResult:
    """Start (or bring to the current network manifest) this host's ``roles``: its nodes
    from the manifest, then the services of its roles (the RPC node's HTTPS proxy, the
    apps), the apps on the organisation's own RPC node (RPC_URL)."""
    began = time.monotonic()
    if (settings.nodes_dir / "validator1").exists():
        raise NetworkError(
            f"{settings.data_dir} holds the single-host network; give this host's roles a data "
            "directory of their own (NATIVE_DATA_DIR)."
        )
    net = HostNetwork(settings, roles)
    if any(role in NODE_ROLES for role in roles):
        _check_binaries(net)
    net.check_keys(roles)
    services = [service for service in build() if role_of(service) in roles]
    _check_ports_free(net, [name for name in net.node_names()
                            if name in roles and not net.is_running(name)])
    applied = net.apply(roles, progress)
    sealed = time.monotonic()
    if "apps" in roles:
        progress(f"waiting for this organisation's RPC node at {settings.rpc_url}")
        wait_for_chain(settings, net.manifest.genesis_hash)
    started = [*applied.started, *applied.restarted, *start_services(services, None, progress)]
    return UpResult(services, started, [], sealed - began, time.monotonic() - began, applied)


def start_services(services: Sequence[Service], net: LocalNetwork | None,
                   progress: Callable[[str], None]) -> list[str]:
    """Start what is not running of ``services``, side by side: each process starts without
    waiting for those before it to be ready, except after a service the later ones need
    (``others_need_it``) or a step that is not a process (the deployment), which is ready
    before the next starts; then each is awaited in order. Returns the names started, in
    order. A service that does not become ready raises; the others go on (``down`` stops
    them), as when they started one by one."""
    started: set[str] = set()
    starting: list[BackgroundService] = []
    for service in services:
        progress(f"checking {service.name}")
        if isinstance(service, BackgroundService) and not service.others_need_it:
            if service.launch(net):
                starting.append(service)
        elif service.start(net):
            started.add(service.name)
    for waiting in starting:
        waiting.wait_ready()
        started.add(waiting.name)
    return [service.name for service in services if service.name in started]


def stop_services(services: Sequence[Service]) -> list[str]:
    """Stop ``services``: those no other needs side by side, then the rest in reverse order
    (the portal's index, the broker, Redis last); the names of those that had to be killed."""
    apps = [service for service in services
            if isinstance(service, BackgroundService) and not service.others_need_it]
    with ThreadPoolExecutor(max_workers=max(1, len(apps))) as pool:
        clean = dict(zip([service.name for service in apps],
                         pool.map(lambda service: service.stop(), apps), strict=True))
    for service in reversed(services):
        if service not in apps:
            clean[service.name] = service.stop()
    return [service.name for service in reversed(services) if not clean[service.name]]


def wait_for_chain(settings: ChainSettings, genesis: str) -> None:
    """The RPC node at RPC_URL serves this network and has sealed blocks."""
    url = settings.rpc_url
    w3 = connect(url)
    wait_for(lambda: w3.eth.block_number >= 1, timeout=FIRST_BLOCK_TIMEOUT,
             what=f"the RPC node at {url} to follow a sealing chain")
    served = call(url, "Reading the RPC node's genesis", lambda: w3.eth.get_block(0))["hash"]
    if served.to_0x_hex() != genesis:
        raise NetworkError(f"The RPC node at {url} (RPC_URL) serves another chain (genesis "
                           f"{served.to_0x_hex()[:14]}…); point RPC_URL at your organisation's "
                           "RPC node of this network.")


def page_origins(settings: ChainSettings, services: Sequence[Service]) -> tuple[str, ...]:
    """The origins of the web pages this stack serves, which the RPC node lets use it from a
    browser: the faucet's and the portal's (a page on a loopback address is reached both as
    localhost and as 127.0.0.1) and the explorer's, if EXPLORER_URL names one."""
    origins: list[str] = []
    for service in services:
        if isinstance(service, FaucetService | PortalWebService):
            host, port = service.settings.host, service.settings.port
            names = (["localhost", "127.0.0.1"] if host in LOOPBACK_OR_ANY
                     else [host if ":" not in host else f"[{host}]"])
            origins += [f"http://{name}:{port}" for name in names]
    explorer = urlsplit(settings.explorer_url)
    if explorer.scheme and explorer.netloc:
        origins.append(f"{explorer.scheme}://{explorer.netloc}")
    return tuple(dict.fromkeys(origins))


# Hosts a service binds to that browsers on this machine reach as localhost or 127.0.0.1.
LOOPBACK_OR_ANY = frozenset({"127.0.0.1", "localhost", "0.0.0.0", "::", "::1", ""})


def down(settings: ChainSettings, services: Sequence[Service] = (), *,
         wipe: bool = False) -> list[str]:
    """Stop everything the runner started, services first; return what had to be killed."""
    net = network(settings)
    unclean = stop_services(services)
    unclean += net.stop()
    if wipe:
        shutil.rmtree(net.home, ignore_errors=True)
    return unclean


def status(settings: ChainSettings, services: Sequence[Service] = ()) -> dict[str, Any]:
    """One JSON-ready description of the running stack."""
    net = network(settings)
    nodes = {
        name: {"running": net.is_running(name), "log": str(net.log_file(name))}
        for name in net.node_names()
    }
    running = all(node["running"] for node in nodes.values())
    head = None
    if nodes.get(RPC_NODE, {}).get("running"):
        try:
            head = net.block_number()
        except PilotChainError:
            head = None
    report: dict[str, Any] = {
        "running": running,
        "rpc_url": net.rpc_url,
        "ws_url": net.ws_url,
        "chain_id": settings.chain_id,
        "network_name": settings.network_name,
        "currency_symbol": settings.currency_symbol,
        "explorer_url": settings.explorer_url or None,
        "block_number": head,
        "genesis_file": str(settings.genesis_file),
        "keys_dir": str(settings.keys_dir),
        "data_dir": str(net.home),
        "nodes": nodes,
    }
    for service in services:
        report.update(service.status())
    return report


def _check_binaries(net: LocalNetwork) -> None:
    for binary in ("geth", "bootnode"):
        if not (net.bin_dir / binary).is_file():
            raise NetworkError(
                f"{binary} is not in {net.bin_dir}; run ./scripts/up, which builds geth "
                "v1.13.15, or set GETH_BIN_DIR to a folder holding geth and bootnode 1.13.15."
            )


def _check_ports_free(net: LocalNetwork, names: list[str]) -> None:
    """Fail early, naming the setting, if another program holds a port a node needs."""
    wanted: list[tuple[str, int, int]] = []
    for name in names:
        single_host = not isinstance(net, HostNetwork)  # else the manifest sets p2p ports
        if name == BOOTNODE:
            if single_host:
                wanted.append(("BOOTNODE_PORT", net.ports.bootnode, socket.SOCK_DGRAM))
            continue
        ports = net.node_ports(name)
        if single_host:
            wanted.append(("P2P_BASE_PORT", ports["p2p"], socket.SOCK_STREAM))
            wanted.append(("P2P_BASE_PORT", ports["p2p"], socket.SOCK_DGRAM))
        wanted.append(("AUTHRPC_BASE_PORT", ports["authrpc"], socket.SOCK_STREAM))
        if ports.get("metrics"):
            wanted.append(("GETH_METRICS_BASE_PORT", ports["metrics"], socket.SOCK_STREAM))
        if name == RPC_NODE:
            wanted.append(("RPC_HTTP_PORT", net.ports.http, socket.SOCK_STREAM))
            wanted.append(("RPC_WS_PORT", net.ports.ws, socket.SOCK_STREAM))
    for setting, port, kind in wanted:
        host = net.settings.geth_metrics_addr if setting == "GETH_METRICS_BASE_PORT" \
            else net.settings.host
        check_port_free(port, setting, host, kind)
