"""Fixtures of the Compose tests on a real Docker engine (tests/test_compose_engine.py).

``docker_engine`` installs Docker and Compose v2 (scripts/lib/install-docker.sh) and, when no
engine answers, starts ``dockerd`` itself; the last test session using an engine a test
session started stops it (never one no test started), so two test runs on one machine share it
instead of one stopping it under the other. ``local_images`` builds or finds the local
stand-ins of the upstream images (scripts/lib/build-local-images.sh), since no image registry
is reachable here. ``ComposeProject`` runs ``docker compose`` on a fresh clone with a unique
project name, every published port free and on 127.0.0.1, and ``down`` checks that nothing of
the project is left.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import random
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import SMALL_GETH_CACHE_MB
from web3 import Web3

from pilotchain.chain import wait_for, wait_for_blocks
from pilotchain.errors import ChainError
from pilotchain.settings import PROJECT_ROOT
from runner.ports import free_port

INSTALL_DOCKER = PROJECT_ROOT / "scripts" / "lib" / "install-docker.sh"
BUILD_IMAGES = PROJECT_ROOT / "scripts" / "lib" / "build-local-images.sh"
LOOPBACK = "127.0.0.1"
# Every published port of docker-compose.yml, by the variable that chooses it.
PORT_VARIABLES = (
    "RPC_HTTP_PORT", "RPC_WS_PORT", "BRIDGE_METRICS_PORT", "FAUCET_PORT", "EXPLORER_PORT",
    "MQTT_PORT", "INGEST_HTTP_PORT", "PORTAL_PORT", "PROMETHEUS_PORT")
# Every test session using the engine holds this file locked shared; starting or stopping a
# dockerd takes it exclusively. The pid file names a dockerd a test session started.
ENGINE_LOCK = Path(tempfile.gettempdir()) / "pilotchain-test-dockerd.lock"
ENGINE_STARTED = Path(tempfile.gettempdir()) / "pilotchain-test-dockerd.pid"
# What docker compose needs from the caller's environment; nothing else (no .env, no CHAIN_ID ...)
# may change the defaults the tests check.
KEPT_VARIABLES = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG", "TMPDIR")

__all__ = ["ComposeProject", "Timings", "clone_head", "docker_engine", "local_images",
           "replay_into", "timings"]


class ComposeFailure(AssertionError):
    """A docker or docker compose command failed; carries its output."""


def run(command: Sequence[str], *, timeout: float, env: dict[str, str] | None = None,
        cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, failing with its output (not a traceback of CalledProcessError)."""
    result = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout,
                            env=env, cwd=cwd, check=False)
    if check and result.returncode != 0:
        raise ComposeFailure(f"{' '.join(command)} exited {result.returncode}:\n"
                             f"{result.stdout[-4000:]}{result.stderr[-4000:]}")
    return result


def engine_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0
    except subprocess.TimeoutExpired:  # a starting engine on a busy machine: ask again
        return False


@dataclass
class Timings:
    """Durations of the phases, shown at the end of the session (never asserted)."""

    phases: list[tuple[str, float]] = field(default_factory=list)

    def measure(self, name: str) -> _Phase:
        return _Phase(self, name)


@dataclass
class _Phase:
    timings: Timings
    name: str
    started: float = 0.0

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.timings.phases.append((self.name, time.monotonic() - self.started))


@pytest.fixture(scope="session")
def timings(request: pytest.FixtureRequest) -> Iterator[Timings]:
    found = Timings()
    yield found
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not found.phases:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line("compose phases (seconds):")
        for name, seconds in found.phases:
            reporter.write_line(f"  {name:<48} {seconds:7.1f}")


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory, timings: Timings) -> Iterator[None]:
    """A Docker engine with Compose v2, shared with any other test session on the machine;
    started here if none answers, stopped by the last session using it."""
    with timings.measure("install docker + compose"):
        run([str(INSTALL_DOCKER)], timeout=1800)
    with ENGINE_LOCK.open("a") as lock:
        # Shared: using the engine beside any other session (waits only while another
        # session starts or stops a dockerd).
        fcntl.flock(lock, fcntl.LOCK_SH)
        if not engine_answers():
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not engine_answers():  # another session may have started one meanwhile
                    with timings.measure("start dockerd"):
                        _start_dockerd(tmp_path_factory.mktemp("dockerd") / "dockerd.log")
            finally:
                fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            yield
        finally:
            # The last user stops a dockerd a test session started; with others still using
            # it, the exclusive lock is not free and it stays for them.
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                _stop_started_dockerd()


def _start_dockerd(log_path: Path) -> None:
    """dockerd in a session of its own (a Ctrl-C of pytest must not kill it before the
    teardown has removed the containers, nor may this session's end stop it under another's),
    its pid written for whichever session stops it."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    ENGINE_STARTED.write_text(str(process.pid))
    try:
        wait_for(lambda: process.poll() is None and engine_answers(), timeout=300,
                 what=f"dockerd to answer (its log: {log_path})", interval=0.5)
    except BaseException:
        _stop_started_dockerd()
        raise


def _stop_started_dockerd() -> None:
    """Stop the dockerd a test session started, if it still runs: SIGTERM, SIGKILL if it
    hangs (it removes its containers' state first, which can take a while)."""
    try:
        pid = int(ENGINE_STARTED.read_text())
    except (OSError, ValueError):
        return  # no test session started the engine that answers: never stop it
    ENGINE_STARTED.unlink(missing_ok=True)
    if not _is_dockerd(pid):
        return
    os.kill(pid, signal.SIGTERM)
    try:
        wait_for(lambda: not _is_dockerd(pid) or None, timeout=60, interval=0.5,
                 what=f"dockerd (pid {pid}) to stop")
    except ChainError:
        os.kill(pid, signal.SIGKILL)


def _is_dockerd(pid: int) -> bool:
    """Whether ``pid`` is still a dockerd (not a pid the kernel gave to another process). A
    dockerd this process started is reaped once it exits: unreaped, it stays in /proc as a
    zombie named dockerd, and every session's end waited a minute for it."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # another session's dockerd: its own parent reaps it
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    name, _, rest = stat.partition(" (")[2].rpartition(")")
    return name == "dockerd" and rest.split()[0] != "Z"


@pytest.fixture(scope="session")
def local_images(docker_engine: None, timings: Timings) -> dict[str, str]:
    """GETH_IMAGE, PYTHON_IMAGE, REDIS_IMAGE, MOSQUITTO_IMAGE, PROMETHEUS_IMAGE,
    RPC_PROXY_IMAGE: local builds, reused while their inputs hold."""
    with timings.measure("local images (geth, python, redis, mosquitto, prometheus, nginx)"):
        output = run([str(BUILD_IMAGES)], timeout=1800).stdout
    images = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    assert set(images) == {"GETH_IMAGE", "PYTHON_IMAGE", "REDIS_IMAGE", "MOSQUITTO_IMAGE",
                           "PROMETHEUS_IMAGE", "RPC_PROXY_IMAGE"}, output
    return images


@dataclass
class ComposeProject:
    """One ``docker compose`` project on a directory, isolated by its unique name."""

    directory: Path
    images: dict[str, str]
    settings: dict[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"pilotchain-test-{secrets.token_hex(4)}")
    ports: dict[str, int] = field(default_factory=dict)
    chain_subnet_prefix: str = ""

    def __post_init__(self) -> None:
        self.ports = {variable: free_port() for variable in PORT_VARIABLES}
        self.chain_subnet_prefix = unused_subnet_prefix()

    @property
    def env(self) -> dict[str, str]:
        env = {key: os.environ[key] for key in KEPT_VARIABLES if key in os.environ}
        env.update(self.images)
        env.update({key: str(port) for key, port in self.ports.items()})
        env["PUBLISH_ADDR"] = LOOPBACK
        env["CHAIN_SUBNET_PREFIX"] = self.chain_subnet_prefix
        # Debian's docker.io has no buildx: build with the classic builder.
        env["DOCKER_BUILDKIT"] = "0"
        env["COMPOSE_BAKE"] = "false"
        env["GETH_CACHE_MB"] = SMALL_GETH_CACHE_MB
        env.update(self.settings)
        return env

    def url(self, variable: str, scheme: str = "http", host: str = LOOPBACK) -> str:
        """The published port of ``variable``; ``host="localhost"`` where a page must be
        opened by that name (the portal: its sign-in domain and Secure cookie)."""
        return f"{scheme}://{host}:{self.ports[variable]}"

    def compose(self, *args: str, timeout: float = 600, check: bool = True,
                ) -> subprocess.CompletedProcess[str]:
        return run(["docker", "compose", "-p", self.name, *args], timeout=timeout,
                   env=self.env, cwd=self.directory, check=check)

    def ps(self) -> list[dict[str, Any]]:
        """Every container of the project, exited ones too (one JSON object per line)."""
        output = self.compose("ps", "-a", "--format", "json", timeout=60).stdout
        rows: list[dict[str, Any]] = []
        for line in output.splitlines():
            line = line.strip()
            if line:
                parsed = json.loads(line)
                rows.extend(parsed if isinstance(parsed, list) else [parsed])
        return rows

    def wait_until_up(self, long_running: Sequence[str], one_shot: Sequence[str], *,
                      timeout: float) -> None:
        """Every long-running service running and healthy, every one-shot exited with 0."""
        not_ready: list[str] = []

        def ready() -> bool:
            by_service = {row["Service"]: row for row in self.ps()}
            not_ready.clear()
            for service in long_running:
                row = by_service.get(service, {})
                if row.get("State") != "running" or row.get("Health") != "healthy":
                    not_ready.append(f"{service} ({row.get('State', 'missing')}"
                                     f"{', ' + row['Health'] if row.get('Health') else ''})")
            for service in one_shot:
                row = by_service.get(service, {})
                if row.get("State") != "exited" or row.get("ExitCode") != 0:
                    not_ready.append(f"{service} ({row.get('State', 'missing')}, "
                                     f"exit code {row.get('ExitCode')})")
            return not not_ready

        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() >= deadline:
                logs = self.compose("logs", "--no-color", "--tail", "30", check=False).stdout
                raise AssertionError(
                    f"not healthy after {timeout:.0f} s: {', '.join(not_ready)}\n{logs[-8000:]}")
            time.sleep(2)

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of this project that still exist."""
        label = f"label=com.docker.compose.project={self.name}"
        found = {}
        for kind, command in (("containers", ["docker", "ps", "-a", "-q"]),
                              ("networks", ["docker", "network", "ls", "-q"]),
                              ("volumes", ["docker", "volume", "ls", "-q"])):
            listed = run([*command, "--filter", label], timeout=60).stdout.split()
            if listed:
                found[kind] = listed
        return found

    def exit_codes(self) -> dict[str, int]:
        """Each stopped container's exit code, by service."""
        containers = self.compose("ps", "-a", "-q", timeout=60).stdout.split()
        if not containers:
            return {}
        lines = run(["docker", "inspect", "--format",
                     '{{index .Config.Labels "com.docker.compose.service"}} {{.State.ExitCode}}',
                     *containers], timeout=60).stdout.splitlines()
        return {service: int(code) for service, code in (line.split() for line in lines)}

    def down(self) -> None:
        """``down -v --remove-orphans`` and fail if anything of the project is left."""
        self.compose("down", "-v", "--remove-orphans", "--timeout", "120", timeout=600)
        left = self.leftovers()
        assert not left, f"docker compose down -v left {left} of project {self.name}"


def unused_subnet_prefix() -> str:
    """The first three octets of a /24 in 10.0.0.0/8 that no network of this engine uses: the
    geth nodes have fixed addresses in the chain network, so two projects side by side (ours and
    another session's) must not share its subnet."""
    networks = run(["docker", "network", "ls", "-q"], timeout=60).stdout.split()
    subnets = run(["docker", "network", "inspect", "--format",
                   "{{range .IPAM.Config}}{{.Subnet}} {{end}}", *networks],
                  timeout=60).stdout.split() if networks else []
    used = [ipaddress.ip_network(subnet, strict=False) for subnet in subnets]
    chooser = random.SystemRandom()
    while True:
        prefix = f"10.{chooser.randint(100, 254)}.{chooser.randint(0, 255)}"
        candidate = ipaddress.ip_network(f"{prefix}.0/24")
        if not any(candidate.overlaps(subnet) for subnet in used):
            return prefix


def clone_head(destination: Path, owner: int) -> Path:
    """A fresh clone of this checkout's HEAD, owned by uid/gid ``owner`` (not the tester)."""
    head = run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], timeout=30).stdout.strip()
    run(["git", "clone", "--quiet", "--no-checkout", str(PROJECT_ROOT), str(destination)],
        timeout=300)
    run(["git", "-C", str(destination), "checkout", "--quiet", "--detach", head], timeout=120)
    run(["chown", "-R", f"{owner}:{owner}", str(destination)], timeout=120)
    return destination


def replay_into(project: ComposeProject, path: Path) -> None:
    """Publish the recorded trades in ``path`` (a file inside the project directory) into the
    stack's stream with the documented command, run in the bridge container."""
    inside = Path("/pilotchain") / path.relative_to(project.directory)
    project.compose("exec", "-T", "bridge", "pilotchain", "replay", str(inside), timeout=300)


# --- what the fault tests read of the nodes -------------------------------------------------


def docker(*args: str, timeout: float = 120) -> None:
    run(["docker", *args], timeout=timeout)


def container_of(stack: ComposeProject, service: str) -> str:
    container = stack.compose("ps", "-a", "-q", service, timeout=60).stdout.strip()
    assert container, f"no container for {service}"
    return container


def geth_js(stack: ComposeProject, service: str, expression: str) -> Any:
    """Evaluate ``expression`` in the geth console of ``service`` (its IPC) as JSON."""
    output = stack.compose("exec", "-T", service, "geth", "attach", "--exec",
                           f"JSON.stringify({expression})", "/data/geth.ipc", timeout=60).stdout
    # The console prints the string it got back as a quoted JavaScript string.
    return json.loads(json.loads(output.strip().splitlines()[-1]))


class Views:
    """What every node says about block ``height``, kept for the timeout message."""

    def __init__(self, stack: ComposeProject, nodes: Sequence[str]) -> None:
        self.stack, self.nodes = stack, nodes
        self.last: dict[str, Any] = {}

    def read(self, height: int) -> dict[str, Any]:
        for node in self.nodes:
            try:
                self.last[node] = geth_js(
                    self.stack, node,
                    f"{{head: eth.blockNumber, peers: admin.peers.length, "
                    f"hash: (eth.getBlock({height}) || {{}}).hash || null}}")
            except (ComposeFailure, ValueError, IndexError) as error:
                self.last[node] = f"unreadable: {str(error).splitlines()[0]}"
        return self.last

    def peers(self, node: str) -> int | None:
        view = self.read(0)[node]
        return view["peers"] if isinstance(view, dict) else None

    def one_chain_at(self, height: int) -> bool:
        """Every node has block ``height`` and they agree on its hash."""
        views = self.read(height)
        hashes = {view["hash"] if isinstance(view, dict) else None for view in views.values()}
        return len(hashes) == 1 and None not in hashes

    def __str__(self) -> str:
        return "; ".join(f"{node}: {view}" for node, view in self.last.items())


def wait_for_one_chain(stack: ComposeProject, nodes: Sequence[str], height: int, *,
                       w3: Web3, period: float, blocks: int, what: str, why: str) -> None:
    """Every one of ``nodes`` has the same block ``height``; fail once ``w3``'s node (one
    that kept sealing) went ``blocks`` blocks on without it."""
    views = Views(stack, nodes)
    try:
        wait_for_blocks(lambda: views.one_chain_at(height), w3=w3, period=period, blocks=blocks,
                        interval=1.0, what=f"{what}: one block {height} on {', '.join(nodes)}",
                        why=why)
    except Exception as error:
        raise AssertionError(f"{error}\nLast seen: {views}") from None


def signer_address(stack: ComposeProject, service: str) -> str:
    return Web3.to_checksum_address(
        (stack.directory / "keys" / service / "address").read_text().strip())


def sealer_of(w3: Web3, number: int) -> str:
    return Web3.to_checksum_address(
        w3.provider.make_request("clique_getSigner", [hex(number)])["result"])


# A signer of three seals at least one block in every few; twenty without one of its blocks
# means it does not seal.
TURN_BLOCKS = 20


def wait_until_sealed_by(w3: Web3, address: str, after: int, *, period: float,
                         what: str) -> int:
    """The first block above ``after`` that ``address`` sealed, within TURN_BLOCKS blocks."""
    checked = after

    def sealed() -> int | None:
        nonlocal checked
        while checked < w3.eth.block_number:
            checked += 1
            if sealer_of(w3, checked) == address:
                return checked
        return None

    return wait_for_blocks(sealed, w3=w3, period=period, blocks=TURN_BLOCKS, what=what,
                           why="Clique lets each signer of three seal at least once in a few "
                               "blocks")
