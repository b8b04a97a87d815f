"""The runner's bookkeeping without geth: recorded ports, process records, log tails."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from conftest import network_settings

from runner.localnet import LocalNetwork
from runner.ports import free_port
from runner.processes import ManagedProcess, log_tail


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
