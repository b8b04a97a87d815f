"""The native runner: the network of ``docker-compose.yml`` as local processes on loopback.

It runs the very same ``validator.sh`` and ``node.sh`` that Compose runs, with the same
``genesis.json`` layout, so what the tests exercise is what a pilot deploys.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import Web3RPCError
from web3.types import RPCEndpoint, TxReceipt

from pilotchain.chain import (
    call,
    connect,
    receipt_within,
    rpc_message,
    wait_for,
    wait_for_blocks,
    wait_on_chain,
)
from pilotchain.chainfiles import create_chain_files
from pilotchain.config import ChainSettings
from pilotchain.errors import ChainError, NetworkError
from pilotchain.keys import KeyStore
from pilotchain.settings import PROJECT_ROOT
from runner import processes
from runner.ports import Ports

RPC_NODE = "rpc"
BOOTNODE = "bootnode"
# A sent transaction goes into the next block, or one soon after when the pool is busy; ten
# blocks is what a test allows before calling it lost.
MINED_WITHIN = 10
# The vanity of the blocks the native validators seal, and of those they may not seal yet
# (LocalNetwork.seal says why they differ); at most 32 bytes.
VANITY = "pilotchain"
WAITING_VANITY = "pilotchain: not sealing yet"
# How long a validator returning to a chain waits to catch up before it seals: two of geth's
# ten-second sync rounds and their imports (LocalNetwork.catch_up).
CATCH_UP_SECONDS = 25.0
T = TypeVar("T")
log = logging.getLogger(__name__)


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class LocalNetwork:
    """Bootnode, validators and the RPC node of one network, as background processes."""

    def __init__(self, settings: ChainSettings, bin_dir: Path, ports: Ports | None = None,
                 *, fast_keys: bool = False, verbosity: int = 3,
                 page_origins: Sequence[str] = ()) -> None:
        self.settings = settings
        # The origins of the stack's own pages (runner.stack fills them in once it knows its
        # services); with RPC_CORS_ORIGINS, the only pages a browser may use the RPC node from.
        self.page_origins = tuple(page_origins)
        self.bin_dir = bin_dir
        self.keys = KeyStore(settings.keys_dir)
        self.home = settings.data_dir
        self.state_file = self.home / "state.json"
        self.fast_keys = fast_keys
        self.verbosity = verbosity
        self._state = self._read_state()
        self._connections: dict[str, tuple[str, Web3]] = {}
        # Running nodes keep the ports they were started on; a stopped network takes the
        # settings' ports, so a port changed in .env applies at the next start.
        recorded = self._ports_from_state() if self.running() else None
        self.ports = ports or recorded or Ports.from_settings(settings)

    # -- set-up -------------------------------------------------------------------------

    def init(self, *, force: bool = False) -> list[str]:
        """Create missing keys and genesis.json; return what was created."""
        return create_chain_files(self.settings, force=force, fast_keys=self.fast_keys,
                                  has_chain_data=self._has_chain_data())

    def _has_chain_data(self) -> bool:
        nodes = self.settings.nodes_dir
        return nodes.is_dir() and any(nodes.iterdir())

    # -- processes ---------------------------------------------------------------------

    def node_names(self) -> list[str]:
        return [BOOTNODE, *(role.name for role in self.keys.validators()), RPC_NODE]

    def datadir(self, name: str) -> Path:
        return self.settings.nodes_dir / name

    def ipc_path(self, name: str) -> Path:
        return self.datadir(name) / "geth.ipc"

    def log_file(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def process(self, name: str) -> processes.ManagedProcess:
        return processes.ManagedProcess(name, self.home / "pids")

    def is_running(self, name: str) -> bool:
        return self.process(name).is_running()

    def running(self) -> list[str]:
        return [name for name in self._state.get("nodes", {}) if self.is_running(name)]

    def start(self, progress: Callable[[str], None] = lambda _: None) -> list[str]:
        """Start every node that is not running; return the names started.

        The validators started here seal only once every one of them takes its peers' blocks
        (:meth:`_start_sealing`).
        """
        started = [name for name in self.node_names() if not self.is_running(name)]
        signers = {role.name for role in self.keys.validators()}
        sealing = [name for name in signers if name not in started]
        for name in started:
            progress(f"starting {name} (log: {self.log_file(name)})")
            self.start_node(name, seal=name not in signers)
        self._start_sealing([name for name in started if name in signers], live=bool(sealing))
        return started

    def start_node(self, name: str, *, timeout: float = 60.0, seal: bool = True) -> None:
        """Start ``name`` and wait until it listens (its IPC socket is up); a validator
        started with ``seal`` False neither unlocks its key nor seals until
        :meth:`_start_sealing` tells it to.

        Starting nodes one after the other lets each dial the static peers already
        listening, so signers meet within a second instead of after a discovery round.
        """
        if self.is_running(name):
            return
        self._spawn(name, seal=seal)
        if name != BOOTNODE:
            wait_for(lambda: self.ipc_path(name).exists() or self._check_alive(name),
                     timeout=timeout, what=f"{name} to open its IPC socket")

    def _start_sealing(self, names: Sequence[str], *, live: bool) -> None:
        """Have the validators ``names``, started with ``seal`` False, seal; none can seal a
        block before all take their peers' blocks.

        geth drops the blocks it is sent until it first seals or syncs, and takes a peer's
        head from a sent block to be that block's parent. A validator that sealed first (on
        a restart, or a fresh chain on a busy machine) had its block dropped by those not
        sealing yet, which then sealed their own; with each having "signed recently" on a
        view of its own and none seeing another's head as higher, the chain stayed there
        for good. With ``live`` (other validators are sealing), each first catches up.
        """
        self.take_blocks(names)
        if live:
            for name in names:
                self.catch_up(name)
        self.seal(names)

    def catch_up(self, name: str, *, within: float = CATCH_UP_SECONDS) -> None:
        """Wait until validator ``name`` holds a block of the last few periods, or
        ``within`` seconds: a validator returning to a chain that others seal would seal on
        the head it stopped at, a fork that keeps it out until geth's next sync round. geth
        syncs a node with fewer than five peers every ten seconds; a chain with no recent
        block after two rounds is not being sealed (all its validators were down), and the
        validator seals where it is."""
        w3 = self.web3(name)
        recent = 3 * self.settings.block_period

        def caught_up() -> bool:
            self._check_alive(name)
            return w3.eth.get_block("latest")["timestamp"] >= time.time() - recent

        try:
            wait_for(caught_up, timeout=within, what=f"{name} to catch up with the chain")
        except ChainError:
            log.info("%s holds no block of the last %d s after %d s: the chain is not being "
                     "sealed, so it seals from block %d.", name, recent, within,
                     self.block_number(name))

    def take_blocks(self, names: Sequence[str]) -> None:
        """Start the miners of validators ``names`` with their keys still locked: from then
        on each takes the blocks it is sent; its own seals fail until :meth:`seal`."""
        self._each(names, "miner_setExtra", "set its blocks' vanity", lambda _: [WAITING_VANITY])
        self._each(names, "miner_start", "start its miner")

    def seal(self, names: Sequence[str]) -> None:
        """Unlock the keys of validators ``names`` (after :meth:`take_blocks`) and start
        their miners again, now sealing."""
        passwords = {name: self.keys.role(name).password for name in names}
        # 0: for as long as the node runs; geth decrypts the keystore (scrypt, about a second).
        self._each(names, "personal_unlockAccount",
                   f"unlock its signer key with the password in its directory of "
                   f"{self.keys.directory}",
                   lambda name: [self.keys.role(name).address, passwords[name], 0])
        self._each(names, "miner_stop", "stop its miner")
        # geth seals a block only if it differs from the last it tried, and the one tried
        # with the key locked was the same block unless a second has passed since: another
        # vanity (the first 32 bytes of a Clique block's extraData) makes it another block.
        self._each(names, "miner_setExtra", "set its blocks' vanity", lambda _: [VANITY])
        self._each(names, "miner_start", "start sealing")

    def _each(self, names: Sequence[str], method: str, doing: str,
              params: Callable[[str], list[Any]] = lambda _: []) -> None:
        """Call ``method`` on each node of ``names`` over its IPC socket, side by side;
        ``doing`` says what for, in the error if one refuses."""
        def one(name: str) -> None:
            try:
                connect(str(self.ipc_path(name))).manager.request_blocking(
                    RPCEndpoint(method), params(name))
            except Web3RPCError as error:
                raise NetworkError(f"{name} could not {doing}: {rpc_message(error)}.") from None
            except OSError as error:
                self._check_alive(name)
                raise NetworkError(f"{name} did not answer over {self.ipc_path(name)} "
                                   f"({error}). Last lines of its log:\n"
                                   f"{self.log_tail(name)}") from None

        if names:
            with ThreadPoolExecutor(max_workers=len(names)) as pool:
                list(pool.map(one, names))

    def node_ports(self, name: str) -> dict[str, int]:
        """The p2p, authrpc and metrics ports of node ``name`` (metrics 0: off)."""
        index = self.node_names().index(name) if name in self.node_names() else 0
        return self.ports.node(name, index)

    def _spawn(self, name: str, *, seal: bool = True) -> None:
        ports = self.node_ports(name)
        self.datadir(name).mkdir(parents=True, exist_ok=True)
        argv, env = self._command(name, ports)
        if not seal:
            env["MINE"] = "0"
        marker = str(self.keys.bootnode_key_file if name == BOOTNODE else self.datadir(name))
        self.process(name).start(argv, marker=marker, log_file=self.log_file(name), env=env,
                                 cwd=PROJECT_ROOT)
        self._state.setdefault("nodes", {})[name] = dict(ports)
        self._write_state()

    def stop_node(self, name: str, *, timeout: float = 90.0) -> bool:
        """Stop ``name`` cleanly (SIGTERM, then wait); True if it stopped without SIGKILL."""
        return self.process(name).stop(timeout=timeout)

    def stop(self) -> list[str]:
        """Stop every node, signers before the bootnode; return those that needed SIGKILL."""
        unclean = []
        for name in reversed(list(self._state.get("nodes", {}))):
            if not self.stop_node(name):
                unclean.append(name)
        return unclean

    def _base_env(self, name: str, ports: dict[str, int]) -> dict[str, str]:
        """What validator.sh and node.sh need of every node (geth and bootnode inherit PATH
        and HOME, nothing else of ours)."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "PILOTCHAIN_GETH": str(self.bin_dir / "geth"),
            "DATA_DIR": str(self.datadir(name)),
            "GENESIS_FILE": str(self.settings.genesis_file),
            "NETWORK_ID": str(self.settings.chain_id),
            "P2P_PORT": str(ports["p2p"]),
            "AUTHRPC_PORT": str(ports["authrpc"]),
            # geth's own metrics (/debug/metrics/prometheus); port 0: off.
            "METRICS_ADDR": self.settings.geth_metrics_addr,
            "METRICS_PORT": str(ports.get("metrics", 0)),
            "VERBOSITY": str(self.verbosity),
            "GETH_CACHE": str(self.settings.geth_cache_mb),
        }

    def _command(self, name: str, ports: dict[str, int]) -> tuple[list[str], dict[str, str]]:
        env = {**self._base_env(name, ports), "BOOTNODES": self.bootnode_enode(),
               "NAT": "extip:127.0.0.1"}
        if name == BOOTNODE:
            argv = [str(self.bin_dir / "bootnode"), "-nodekey", str(self.keys.bootnode_key_file),
                    "-addr", f"127.0.0.1:{self.ports.bootnode}", "-verbosity", "3"]
            return argv, env
        if name == RPC_NODE:
            env.update(HTTP_ADDR=self.settings.host, HTTP_PORT=str(self.ports.http),
                       WS_PORT=str(self.ports.ws), STATIC_PEERS=self._static_peers(name),
                       CORS_DOMAINS=",".join(self.cors_origins),
                       VHOSTS=",".join(self.vhosts))
            return ["bash", str(PROJECT_ROOT / "node.sh")], env
        role = self.keys.role(name)
        env.update(SIGNER_ADDRESS=role.address, KEYSTORE_FILE=str(role.keystore),
                   PASSWORD_FILE=str(role.password_file), GAS_LIMIT=str(self.settings.gas_limit),
                   NODEKEY_FILE=str(role.nodekey_file), STATIC_PEERS=self._static_peers(name))
        return ["bash", str(PROJECT_ROOT / "validator.sh")], env

    @property
    def cors_origins(self) -> tuple[str, ...]:
        """The web origins whose pages may use the RPC node from a browser: the stack's own
        and RPC_CORS_ORIGINS."""
        return tuple(dict.fromkeys((*self.page_origins, *self.settings.rpc_cors_origins)))

    @property
    def vhosts(self) -> tuple[str, ...]:
        """The host names the RPC node answers HTTP under: localhost, RPC_HOST if it is a
        name, and RPC_VHOSTS (geth answers IP addresses whatever this says)."""
        own = ["localhost"]
        if not is_ip_address(self.settings.host):
            own.append(self.settings.host.lower())
        return tuple(dict.fromkeys((*own, *self.settings.rpc_vhosts)))

    def _static_peers(self, name: str) -> str:
        """The validators' enodes but ``name``'s: signers must meet before they seal, and the
        RPC node should follow them at once rather than after a discovery round."""
        enodes = []
        for index, role in enumerate(self.keys.validators(), start=1):
            if role.name != name:
                port = self.ports.node(role.name, index)["p2p"]
                enodes.append(f"enode://{role.enode_pubkey}@127.0.0.1:{port}")
        return ",".join(enodes)

    def metrics_targets(self) -> dict[str, str]:
        """Each geth node's metrics endpoint (``host:port``) by node name, for Prometheus's
        ``metrics_path: /debug/metrics/prometheus``; none where they are off."""
        found = {}
        for name in self.node_names():
            port = 0 if name == BOOTNODE else self.node_ports(name).get("metrics", 0)
            if port:
                found[name] = f"{self.settings.geth_metrics_addr}:{port}"
        return found

    def bootnode_enode(self) -> str:
        return f"enode://{self.keys.bootnode_pubkey}@127.0.0.1:0?discport={self.ports.bootnode}"

    # -- state and readiness ------------------------------------------------------------

    @property
    def rpc_url(self) -> str:
        return f"http://{self.settings.host}:{self.ports.http}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.settings.host}:{self.ports.ws}"

    def web3(self, name: str = RPC_NODE) -> Web3:
        """A connection to ``name``: HTTP for the RPC node, IPC for the others (cached)."""
        if name not in self._connections:
            url = self.rpc_url if name == RPC_NODE else str(self.ipc_path(name))
            self._connections[name] = (url, connect(url))
        return self._connections[name][1]

    def block_number(self, name: str = RPC_NODE) -> int:
        w3 = self.web3(name)
        url = self._connections[name][0]
        return call(url, f"Reading the head of {name}", lambda: w3.eth.block_number)

    def wait_for_block(self, number: int, *, name: str = RPC_NODE,
                       timeout: float | None = None) -> int:
        """Wait until ``name`` has block ``number`` or later; return its head.

        Without ``timeout`` the wait lasts as long as the node's chain moves: it fails only
        once ``name`` has taken no new block for :func:`~pilotchain.chain.halt_after` the
        period, however busy the machine. A ``timeout`` (seconds) is for a network that is
        starting, where no block has come yet.
        """
        self._check_alive(name)
        what = f"{name} to reach block {number}"
        if timeout is not None:
            return wait_for(lambda: (head := self.block_number(name)) >= number and head,
                            timeout=timeout, what=what)
        return wait_on_chain(
            lambda: (head := self._check_alive_head(name)) >= number and head,
            w3=self.web3(name), period=self.settings.block_period, what=what,
            past=lambda _start, _head: None)

    def wait_for_blocks(self, condition: Callable[[], T | None], *, blocks: int, what: str,
                        why: str, name: str = RPC_NODE, interval: float = 0.2,
                        progress: Callable[[], object] | None = None) -> T:
        """:func:`~pilotchain.chain.wait_for_blocks` on ``name``'s chain: fail once it went
        ``blocks`` blocks on without ``condition`` holding (without ``progress`` moving, if
        given), or halted."""
        return wait_for_blocks(condition, w3=self.web3(name), blocks=blocks,
                               period=self.settings.block_period, what=what, why=why,
                               interval=interval, progress=progress)

    def receipt(self, tx_hash: HexBytes, *, blocks: int = MINED_WITHIN,
                name: str = RPC_NODE) -> TxReceipt:
        """The receipt of ``tx_hash`` from ``name``, within ``blocks`` blocks."""
        return receipt_within(self.web3(name), tx_hash, blocks=blocks,
                              period=self.settings.block_period)

    def _check_alive_head(self, name: str) -> int:
        """``name``'s head; raise with the end of its log if it has exited."""
        self._check_alive(name)
        return self.block_number(name)

    def _check_alive(self, name: str) -> bool:
        """Raise with the end of its log if ``name`` has exited; False (not ready) otherwise,
        so a readiness poll can end on it."""
        if not self.is_running(name):
            tail = self.log_tail(name)
            raise NetworkError(f"{name} is not running. Last lines of its log:\n{tail}")
        return False

    def log_tail(self, name: str, lines: int = 15) -> str:
        return processes.log_tail(self.log_file(name), lines)

    def iter_logs(self) -> Iterator[tuple[str, Path]]:
        for name in self.node_names():
            yield name, self.log_file(name)

    def _read_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
            return state
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _ports_from_state(self) -> Ports | None:
        saved = self._state.get("ports")
        if not saved:
            return None
        assigned = {name: {"p2p": e["p2p"], "authrpc": e["authrpc"],
                           "metrics": e.get("metrics", 0)}
                    for name, e in self._state.get("nodes", {}).items() if "p2p" in e}
        return Ports(saved["bootnode"], saved["http"], saved["ws"], saved.get("p2p_base"),
                     saved.get("authrpc_base"), assigned=assigned,
                     metrics_base=saved.get("metrics_base", 0))

    def _write_state(self) -> None:
        self._state["ports"] = {"bootnode": self.ports.bootnode, "http": self.ports.http,
                                "ws": self.ports.ws, "p2p_base": self.ports.p2p_base,
                                "authrpc_base": self.ports.authrpc_base,
                                "metrics_base": self.ports.metrics_base}
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state, indent=2))
        tmp.replace(self.state_file)
