"""Shared fixtures: real local Clique networks started by the project's own runner.

Every network lives in its own temporary directory on free ports, so tests never clash
with a running ./scripts/up or with each other, and every process is stopped at teardown
even when the test fails.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from pilotchain.config import ChainSettings
from pilotchain.contract import CompiledContract, compile_settlement
from runner.localnet import LocalNetwork
from runner.ports import Ports
from runner.redis import RedisService, private_connection

# Fixtures shared by several test modules of one component, loaded one way: as plug-ins.
pytest_plugins = [
    "bridge_fixtures", "compose_fixtures", "evm_fixtures", "faucet_fixtures", "gsy_e_fixtures",
    "hosts_fixtures", "ingest_fixtures", "portal_fixtures", "portal_web_fixtures"]

# Every test network's geth --cache (GETH_CACHE_MB): geth's database preallocates its
# write-ahead logs in proportion, about 400 MB per node at the default 1024, and a run's
# networks filled a CI machine's disk.
SMALL_GETH_CACHE_MB = "64"
GETH_BIN_DIR = Path(
    os.environ.get("GETH_BIN_DIR", Path.home() / ".cache/pilotchain/geth-v1.13.15/bin")
)


# Markers follow from the fixtures a test uses, so they cannot be forgotten: a test that asks
# for a network needs geth, one that asks for Redis needs redis-server.
MARKER_FIXTURES = {
    "chain": {"chain", "make_network", "geth_bin_dir", "deployed", "lan"},
    "redis": {"redis_server", "redis_url"},
    "browser": {"browser", "page"},
}


# The modules that take longest, longest first (measured on a 2-core machine: every run lists
# its slowest steps at its end). pytest-xdist hands a free worker the next module in
# collection order (pyproject.toml turns off its reordering by number of tests, which put
# these last): a long module started last kept one worker busy for minutes after the others
# had finished. A module that grows slow belongs here.
LONGEST_FIRST = (
    "test_compose_engine.py",   # ~10 min: the Docker engine's stacks, one after another
    "test_hosts.py",            # ~6 min: organisations as network namespaces
    "test_portal_indexer.py",
    "test_scripts.py",
    "test_portal_web.py",
    "test_operator.py",
    "test_ingest_hardening.py",
    "test_every_leg.py",
    "test_chain.py",
    "test_audit.py",
)


def longest_first(item: pytest.Item) -> int:
    name = item.path.name
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Stable: the tests of a module keep their order, the other modules theirs.
    items.sort(key=longest_first)
    for item in items:
        own_node_id(item)
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in MARKER_FIXTURES.items():
            if used & fixtures:
                item.add_marker(marker)
    shared = [node for node, count in Counter(item.nodeid for item in items).items()
              if count > 1]
    if shared:
        raise pytest.UsageError(
            f"{len(shared)} node ids are shared by several tests, and pytest-xdist would run "
            f"only the first of each: {', '.join(shared[:5])}")


def own_node_id(item: pytest.Item) -> None:
    """Give an item whose node id lost its name's parameters (Schemathesis 4.32's items under
    pytest 9.2: ``test_x[GET /health]`` got the id ``test_x``) its name back. pytest-xdist
    hands out tests by node id, and ran only the first of items sharing one: the parallel
    suite fuzzed one operation of each API instead of all of them."""
    last = item.nodeid.rpartition("::")[2]
    if "[" not in last and item.name.startswith(f"{last}[") and item.name.endswith("]"):
        # pytest 9.2 keeps an item's address as a NodeId (path, names, params) in `_id`.
        item._id = item._id.with_params(item.name[len(last) + 1:-1])


def network_settings(home: Path, **overrides: object) -> ChainSettings:
    """Settings for a throwaway network under ``home``: 1 s blocks (``bridge_fixtures.PERIOD``,
    which the tests' waits measured in blocks assume), its own files."""
    base = ChainSettings(
        block_period=1,
        keys_dir=home / "keys",
        genesis_file=home / "genesis.json",
        data_dir=home / "data",
        geth_bin_dir=GETH_BIN_DIR,
        # A small cache: geth's database preallocates its write-ahead logs in proportion
        # (about 400 MB per node at the default 1024), which filled a CI machine's disk.
        geth_cache_mb=int(SMALL_GETH_CACHE_MB),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def geth_bin_dir() -> Path:
    if not (GETH_BIN_DIR / "geth").is_file():
        pytest.fail(f"geth 1.13.15 is not in {GETH_BIN_DIR}; run ./scripts/test, which builds it")
    return GETH_BIN_DIR


NetworkFactory = Callable[..., LocalNetwork]


def _factory(tmp_path_factory: pytest.TempPathFactory, geth_bin_dir: Path
             ) -> Iterator[NetworkFactory]:
    networks: list[LocalNetwork] = []

    def make(*, start: bool = True, **overrides: object) -> LocalNetwork:
        """A network with ``overrides`` of its settings, started unless ``start`` is False
        (then only its keys and genesis exist, for a test to start the nodes itself)."""
        home = tmp_path_factory.mktemp("net")
        net = LocalNetwork(network_settings(home, **overrides), geth_bin_dir, Ports.free(),
                           fast_keys=True)
        networks.append(net)
        net.init()
        if not start:
            return net
        net.start()
        # Starting: geth processes opening, peering and sealing the first block.
        net.wait_for_block(1, timeout=180)
        return net

    yield make
    for net in networks:
        net.stop()
        # The chain's databases go with the network (its keys and logs stay for a failure's
        # reader): a run starts dozens of networks and keeps its temporary files to the end.
        shutil.rmtree(net.settings.nodes_dir, ignore_errors=True)


@pytest.fixture
def make_network(tmp_path_factory: pytest.TempPathFactory, geth_bin_dir: Path
                 ) -> Iterator[NetworkFactory]:
    """Start a private network for one test (for tests that stop or change nodes)."""
    yield from _factory(tmp_path_factory, geth_bin_dir)


@pytest.fixture(scope="session")
def chain(tmp_path_factory: pytest.TempPathFactory, geth_bin_dir: Path) -> Iterator[LocalNetwork]:
    """One network shared by every test that only sends transactions and reads."""
    for make in _factory(tmp_path_factory, geth_bin_dir):
        yield make()


@pytest.fixture(scope="session")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> CompiledContract:
    """The one real compilation of Settlement in the session (for the in-process EVM tests)."""
    return compile_settlement(tmp_path_factory.mktemp("contracts"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisService]:
    """A real redis-server (append-only, like the stack's) on a free port, for the session."""
    home = tmp_path_factory.mktemp("redis")
    service = RedisService(private_connection(), home / "data", home / "pids")
    service.start()
    yield service
    service.stop()


@pytest.fixture
def redis_url(redis_server: RedisService) -> Iterator[str]:
    """The session's Redis, emptied before each test that uses it."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url
