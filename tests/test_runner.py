"""The runner's bookkeeping without geth: recorded ports, process records, log tails, and
what it tells the RPC node about browsers."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import network_settings

from faucet.config import FaucetSettings
from pilotchain.config import ChainSettings
from pilotchain.errors import ConfigError
from portal.web.config import WebSettings
from runner.faucet import FaucetService
from runner.localnet import LocalNetwork
from runner.portal import PortalWebService
from runner.ports import free_port
from runner.processes import ManagedProcess, log_tail
from runner.stack import page_origins


def test_a_stopped_chain_takes_the_ports_of_its_settings(tmp_path: Path) -> None:
    settings = network_settings(tmp_path)
    first = LocalNetwork(settings, tmp_path / "bin")
    first._write_state()  # what a start leaves behind, without starting anything
    moved = replace(settings, rpc_port=18545, ws_port=18546, bootnode_port=31301)
    again = LocalNetwork(moved, tmp_path / "bin")
    assert (again.ports.http, again.ports.ws, again.ports.bootnode) == (18545, 18546, 31301)
    assert json.loads((settings.data_dir / "state.json").read_text())["ports"]["http"] == 8545


def test_a_running_process_keeps_its_recorded_ports(tmp_path: Path) -> None:
    settings = network_settings(tmp_path, rpc_port=free_port())
    net = LocalNetwork(settings, tmp_path / "bin")
    process = net.process("rpc")
    marker = str(net.datadir("rpc"))
    process.start([sys.executable, "-c", "import time; time.sleep(60)"], marker=marker,
                  log_file=net.log_file("rpc"), env={})
    try:
        net._state.setdefault("nodes", {})["rpc"] = {"p2p": 1, "authrpc": 2}
        net._write_state()
        later = LocalNetwork(replace(settings, rpc_port=free_port()), tmp_path / "bin")
        assert later.ports.http == settings.rpc_port
    finally:
        assert process.stop(timeout=10)
    assert not ManagedProcess("rpc", settings.data_dir / "pids").is_running()


def test_log_tail_gives_the_last_lines_or_says_there_is_none(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    assert log_tail(log) == "(no log)"
    log.write_text("".join(f"line {n}\n" for n in range(30)))
    assert log_tail(log, 2) == "line 28\nline 29"


def test_the_rpc_node_lets_in_the_stacks_own_pages(tmp_path: Path) -> None:
    """./scripts/up hands the RPC node the origins of the pages it serves (both loopback
    names) and the explorer's if one is configured, then RPC_CORS_ORIGINS; host names:
    localhost and RPC_VHOSTS."""
    faucet = FaucetService(FaucetSettings(port=9000), tmp_path, {})
    portal = PortalWebService(WebSettings(port=9200), tmp_path, {})
    assert page_origins(ChainSettings(), [faucet, portal]) == (
        "http://localhost:9000", "http://127.0.0.1:9000", "http://localhost:9200",
        "http://127.0.0.1:9200")
    lan = PortalWebService(WebSettings(host="pilot.lan", domain="pilot.lan:9200"), tmp_path, {})
    explorer = ChainSettings(explorer_url="https://explorer.pilot.test/")
    assert page_origins(explorer, [lan]) == ("http://pilot.lan:9200",
                                             "https://explorer.pilot.test")

    settings = ChainSettings.from_env({"RPC_CORS_ORIGINS": "https://app.pilot.test/",
                                       "RPC_VHOSTS": "RPC.pilot.test"})
    net = LocalNetwork(network_settings(tmp_path, rpc_cors_origins=settings.rpc_cors_origins,
                                        rpc_vhosts=settings.rpc_vhosts),
                       tmp_path / "bin", page_origins=("http://localhost:9200",))
    assert net.cors_origins == ("http://localhost:9200", "https://app.pilot.test")
    assert net.vhosts == ("localhost", "rpc.pilot.test")


@pytest.mark.parametrize("name, raw, sentence", [
    ("RPC_CORS_ORIGINS", "app.pilot.test", "RPC_CORS_ORIGINS must list web origins such as "
                                           "https://app.example.org"),
    ("RPC_CORS_ORIGINS", "https://app.pilot.test/path", "RPC_CORS_ORIGINS must list web "
                                                        "origins"),
    ("RPC_VHOSTS", "https://rpc.pilot.test", "RPC_VHOSTS must list host names such as "
                                             "rpc.example.org (no scheme, no port)"),
    ("RPC_VHOSTS", "rpc.pilot.test:8545", "RPC_VHOSTS must list host names"),
])
def test_a_bad_rpc_access_setting_is_refused_by_name(name: str, raw: str, sentence: str
                                                      ) -> None:
    with pytest.raises(ConfigError) as refused:
        ChainSettings.from_env({name: raw})
    assert str(refused.value).startswith(sentence)
