"""Hosts as network namespaces: several organisations' machines on one test machine.

A :class:`Lan` is a bridge in a namespace of its own; each :class:`Host` is a namespace with one
veth pair to it, an RFC 1918 address (geth's discovery ignores special-use ranges such as
198.18.0.0/15) and its own files (keys, genesis, manifest, data). Commands run in a host's
namespace with ``ip netns exec``, so every process they start (geth, bootnode, nginx, the apps)
lives on that host's network alone; IPC sockets are files, so the test reads nodes through
them from outside. Nothing touches the real network.

Loaded as a pytest plug-in by conftest.py; tests import only the helpers.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from conftest import SMALL_GETH_CACHE_MB

from pilotchain.settings import PROJECT_ROOT

__all__ = ["Host", "Lan", "in_parallel", "lan"]

PILOTCHAIN = str(Path(sys.executable).parent / "pilotchain")
T = TypeVar("T")


class CommandFailed(AssertionError):
    """A command of the test's own set-up failed."""


def ip(*args: str) -> None:
    """An ``ip`` command of the set-up; its error becomes the test's."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                            check=False)
    if result.returncode:
        raise CommandFailed(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass
class Host:
    """One organisation's machine: a namespace on the LAN, its own files and settings."""

    name: str
    ns: str
    address: str
    home: Path
    lan: Lan
    env: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> str:
        """Its veth end on the LAN's bridge (at most 15 characters)."""
        return f"p-{self.name}"[:15]

    def settings(self, **extra: str) -> dict[str, str]:
        """The environment of a command on this host: its own files, nothing of the test's
        ports or directories."""
        base = {key: value for key, value in os.environ.items()
                if not key.startswith(("PYTEST", "COV_"))}
        return {**base, "KEYS_DIR": str(self.home / "keys"),
                "GENESIS_FILE": str(self.home / "genesis.json"),
                "NETWORK_MANIFEST": str(self.home / "network.json"),
                "NATIVE_DATA_DIR": str(self.home / "data"),
                "PILOTCHAIN_HOME": str(PROJECT_ROOT), "GETH_CACHE_MB": SMALL_GETH_CACHE_MB,
                **self.env, **extra}

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``argv`` in this host's namespace."""
        result = subprocess.run(["ip", "netns", "exec", self.ns, *argv], capture_output=True,
                                text=True, timeout=timeout, check=False,
                                env=env or self.settings(), cwd=PROJECT_ROOT)
        if check and result.returncode:
            raise CommandFailed(f"{self.name}: {' '.join(argv)} exited {result.returncode}:\n"
                                f"{result.stdout}\n{result.stderr}")
        return result

    def pilotchain(self, *args: str, check: bool = True, timeout: float = 300,
                   **extra: str) -> subprocess.CompletedProcess[str]:
        """The ``pilotchain`` command on this host."""
        return self.run([PILOTCHAIN, *args], check=check, timeout=timeout,
                        env=self.settings(**extra))

    def ipc(self, role: str) -> str:
        return str(self.home / "data" / "nodes" / role / "geth.ipc")

    def log(self, name: str) -> str:
        path = self.home / "data" / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def set_address(self, address: str) -> None:
        """The host moves to another address (a new lease, a move to another site)."""
        ip("-n", self.ns, "addr", "del", f"{self.address}/{self.lan.prefix}", "dev", "eth0")
        ip("-n", self.ns, "addr", "add", f"{address}/{self.lan.prefix}", "dev", "eth0")
        self.address = address

    def pids(self) -> list[int]:
        result = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True,
                                text=True, timeout=30, check=False)
        return [int(pid) for pid in result.stdout.split()]


class Lan:
    """A switch (a bridge in its own namespace) and the hosts plugged into it."""

    prefix = 16

    def __init__(self, home: Path) -> None:
        # Unique per run: a second run of the suite, or a leftover, never clashes.
        self.tag = "pc" + secrets.token_hex(3)
        self.ns = f"{self.tag}-lan"
        self.home = home
        self.hosts: dict[str, Host] = {}
        self.namespaces: list[str] = []  # created so far: what close() removes

    def start(self) -> None:
        """The switch's namespace and bridge."""
        self._netns(self.ns)
        ip("-n", self.ns, "link", "add", "br0", "type", "bridge")
        ip("-n", self.ns, "link", "set", "br0", "up")

    def _netns(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)

    def add(self, name: str, address: str) -> Host:
        host = Host(name, f"{self.tag}-{name}", address, self.home / name, self)
        host.home.mkdir(parents=True, exist_ok=True)
        self.hosts[name] = host
        self._netns(host.ns)
        ip("-n", host.ns, "link", "set", "lo", "up")
        ip("link", "add", "eth0", "netns", host.ns, "type", "veth", "peer", "name", host.port,
           "netns", self.ns)
        ip("-n", self.ns, "link", "set", host.port, "master", "br0", "up")
        ip("-n", host.ns, "addr", "add", f"{address}/{self.prefix}", "dev", "eth0")
        ip("-n", host.ns, "link", "set", "eth0", "up")
        return host

    def unplug(self, host: Host) -> None:
        """Cut the host's cable at the switch: nothing in or out, its processes untouched."""
        ip("-n", self.ns, "link", "set", host.port, "down")

    def plug(self, host: Host) -> None:
        ip("-n", self.ns, "link", "set", host.port, "up")

    def close(self) -> None:
        """End every process in the hosts' namespaces (ours alone: the namespaces are this
        run's), all at once with SIGTERM and a grace period, then remove every namespace; the
        veth pairs and nftables tables go with them."""
        _end([pid for host in self.hosts.values() for pid in host.pids()])
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30,
                           check=False)


def _end(pids: list[int]) -> None:
    """SIGTERM, up to 30 s of grace, then SIGKILL: what a failed test left in its host."""
    for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not any(Path(f"/proc/{pid}").exists() for pid in pids):
                return
            time.sleep(0.2)


def in_parallel(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run independent calls at once (commands on different hosts); their results in order,
    the first failure raised."""
    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    """A LAN of this module's own; every host on it is stopped and removed at teardown, even
    when a test failed."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs the suite as root)")
    if shutil.which("ip") is None or shutil.which("nft") is None:
        pytest.skip("the hosts need iproute2 and nftables (scripts/lib/install-test-deps.sh "
                    "installs them)")
    network = Lan(tmp_path_factory.mktemp("hosts"))
    try:
        try:
            network.start()
        except CommandFailed as error:
            pytest.skip(f"network namespaces cannot be made here ({error})")
        yield network
    finally:
        network.close()
