"""./scripts/up, status and down as a user runs them, on their own ports and directories; pilots
from before (no ingest, the shared meters' MQTT account) upgraded by `up` without a new
genesis."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from conftest import SMALL_GETH_CACHE_MB
from eth_account import Account
from prometheus_checks import assert_prometheus_text

from pilotchain.chain import connect, wait_for
from pilotchain.config import MqttConnection
from pilotchain.deployment import READER_FUNDING
from runner.mqtt import connect_check
from runner.ports import isolated_stack_env

pytestmark = pytest.mark.chain
ROOT = Path(__file__).resolve().parent.parent


def stack_env(home: Path) -> dict[str, str]:
    """Settings that keep this stack apart from a developer's own ./scripts/up."""
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
    # Test stacks' geth runs with a small cache (conftest.SMALL_GETH_CACHE_MB).
    return {**isolated_stack_env(home, inherited), "GETH_CACHE_MB": SMALL_GETH_CACHE_MB}


def run(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "scripts" / script), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)


def processes_tagged(home: Path) -> list[int]:
    """Every live process whose command line, environment or cwd mentions ``home``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            identity = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
            identity += os.readlink(proc / "cwd").encode()
        except OSError:
            continue
        if str(home).encode() in identity and int(proc.name) != os.getpid():
            found.append(int(proc.name))
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """One stack for the module: a cold ``up`` costs a minute and more (keys, genesis,
    deployment, every service), and the second test starts from a stack like the first's end."""
    home = tmp_path_factory.mktemp("scripts") / "stack"
    env = stack_env(home)
    yield home, env
    run("down", env)


def test_up_is_idempotent_and_down_leaves_nothing(stack: tuple[Path, dict[str, str]]) -> None:
    home, env = stack
    first = run("up", env)
    assert first.returncode == 0, first.stderr + first.stdout
    assert "PilotChain is up" in first.stdout
    assert f"http://127.0.0.1:{env['RPC_HTTP_PORT']}" in first.stdout

    status = run("status", env, "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["rpc_url"] == f"http://127.0.0.1:{env['RPC_HTTP_PORT']}"
    assert report["ws_url"] == f"ws://127.0.0.1:{env['RPC_WS_PORT']}"
    assert report["chain_id"] == 8765
    assert report["settlement_address"].startswith("0x")
    assert Path(report["settlement_abi"]).is_file()
    # The stack's Redis has the password init generated; status shows it masked.
    password = (home / "keys" / "redis" / "password").read_text().strip()
    assert report["redis_url"] == f"redis://:****@127.0.0.1:{env['REDIS_PORT']}/0"
    assert password not in json.dumps(report) and password not in first.stdout
    stranger = redis.Redis(port=int(env["REDIS_PORT"]), socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        stranger.xlen("pilotchain:trades")
    stranger.close()
    assert report["faucet_url"] == f"http://127.0.0.1:{env['FAUCET_PORT']}"
    info = requests.get(f"{report['faucet_url']}/api/info", timeout=10).json()
    assert info["chain_id"] == 8765
    assert report["bridge_metrics_url"] == \
        f"http://127.0.0.1:{env['BRIDGE_METRICS_PORT']}/metrics"
    metrics = requests.get(report["bridge_status_url"], timeout=10).json()
    assert metrics["dead_lettered"] == 0
    assert_prometheus_text(requests.get(report["bridge_metrics_url"], timeout=10))
    assert report["ingest_url"] == f"http://127.0.0.1:{env['INGEST_HTTP_PORT']}/api/readings"
    # Up and refusing outsiders: no uploader credential, no upload.
    assert requests.post(report["ingest_url"], json=[], timeout=10).status_code == 401
    ingest = requests.get(report["ingest_status_url"], timeout=10).json()
    assert ingest["state"] == "running"  # funded, holding READER_ROLE
    assert report["mqtt_url"] == f"mqtt://127.0.0.1:{env['MQTT_PORT']}"
    subscriber = requests.get(report["ingest_mqtt_status_url"], timeout=10).json()
    assert subscriber["state"] == "running"  # authenticated with init's password
    assert report["closer_metrics_url"] == \
        f"http://127.0.0.1:{env['CLOSER_METRICS_PORT']}/metrics"
    closer = requests.get(report["closer_status_url"], timeout=10).json()
    assert closer["state"] == "running"  # funded, found the deployment
    for service in ("ingest", "ingest_mqtt", "closer"):
        found = assert_prometheus_text(requests.get(report[f"{service}_metrics_url"],
                                                    timeout=10))
        assert found['pilotchain_service_state{state="running"}'] == 1, service
    assert report["portal_url"] == f"http://localhost:{env['PORTAL_PORT']}"
    me = requests.get(f"{report['portal_url']}/api/me", timeout=10).json()
    assert me["signed_in"] is False  # its index migrated, the contract found
    # The RPC node lets the stack's own pages in from a browser, and no other page; there is
    # no explorer natively, so nothing links to one.
    assert report["explorer_url"] is None
    for page, allowed in ((report["portal_url"], True), (report["faucet_url"], True),
                          (f"http://localhost:{env['FAUCET_PORT']}", True),
                          ("https://evil.example", False)):
        answer = requests.options(report["rpc_url"], timeout=10, headers={
            "Origin": page, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        assert answer.headers.get("Access-Control-Allow-Origin") == (page if allowed else None)
    rebound = requests.post(report["rpc_url"], headers={"Host": "evil.example"}, timeout=10,
                            json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})
    assert rebound.status_code == 403
    pids_before = sorted(processes_tagged(home))
    assert pids_before

    second = run("up", env)
    assert second.returncode == 0, second.stderr
    assert "already up; nothing changed" in second.stdout
    assert sorted(processes_tagged(home)) == pids_before
    assert json.loads(run("status", env, "--json").stdout)["settlement_address"] == \
        report["settlement_address"]

    # --monitoring adds the sealing exporter and Prometheus to the running stack, which
    # scrapes every service with metrics and alerts on nothing while all is well.
    watched = run("up", env, "--monitoring")
    assert watched.returncode == 0, watched.stderr + watched.stdout
    assert "started sealing-exporter, prometheus" in watched.stdout
    monitored = json.loads(run("status", env, "--json").stdout)
    prometheus = monitored["prometheus_url"]
    assert prometheus == f"http://127.0.0.1:{env['PROMETHEUS_PORT']}"
    jobs = {"bridge", "ingest", "ingest-mqtt", "closer", "sealing", "faucet", "portal", "geth"}

    def targets_up() -> bool | None:
        answer = requests.get(f"{prometheus}/api/v1/query", params={"query": "up"},
                              timeout=10).json()["data"]["result"]
        found = {(s["metric"]["job"], s["metric"].get("node")): s["value"][1] for s in answer}
        return (set(found.values()) == {"1"} and {job for job, _ in found} == jobs
                and {node for job, node in found if job == "geth"} ==
                {"validator1", "validator2", "validator3", "rpc"}) or None

    wait_for(targets_up, timeout=120,
             what="Prometheus to scrape every service and every geth node (its scrape "
                  "interval is 15 s)")
    for service in ("faucet", "portal"):
        assert_prometheus_text(requests.get(monitored[f"{service}_metrics_url"], timeout=10))
    sealing = assert_prometheus_text(requests.get(monitored["sealing_metrics_url"], timeout=10))
    assert (sealing["pilotchain_node_reachable"], sealing["pilotchain_clique_signers"]) == (1, 3)
    alerts = requests.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert len([rule for group in alerts for rule in group["rules"]]) >= 10  # the rules loaded
    assert set(pids_before) < set(processes_tagged(home))

    down = run("down", env)
    assert down.returncode == 0, down.stderr
    assert "Stopped every PilotChain process" in down.stdout
    assert processes_tagged(home) == []
    assert run("status", env).returncode == 3

    # Restarted, the chain continues and keeps its contract.
    again = run("up", env)
    assert again.returncode == 0, again.stderr
    assert json.loads(run("status", env, "--json").stdout)["settlement_address"] == \
        report["settlement_address"]


def test_a_pilot_from_before_the_ingest_gets_a_working_reader_without_a_new_genesis(
        stack: tuple[Path, dict[str, str]]) -> None:
    """Keys and a chain made before the ingest existed (no keys/ingest, no MQTT passwords):
    the next up creates them beside the old genesis, funds the reader and grants its role."""
    home, env = stack
    if run("status", env).returncode != 0:  # run alone, not after the test above
        first = run("up", env)
        assert first.returncode == 0, first.stderr + first.stdout
    report = json.loads(run("status", env, "--json").stdout)
    assert run("down", env).returncode == 0
    genesis = (home / "genesis.json").read_bytes()
    for late in ("ingest", "mqtt", "closer"):
        shutil.rmtree(home / "keys" / late)

    again = run("up", env)
    assert again.returncode == 0, again.stderr + again.stdout
    assert (home / "genesis.json").read_bytes() == genesis
    assert (home / "keys" / "ingest" / "address").is_file()
    status = json.loads(run("status", env, "--json").stdout)
    assert status["settlement_address"] == report["settlement_address"]
    ingest = requests.get(status["ingest_status_url"], timeout=10).json()
    assert ingest["state"] == "running"  # the new account is funded and holds READER_ROLE
    subscriber = requests.get(status["ingest_mqtt_status_url"], timeout=10).json()
    assert subscriber["state"] == "running"  # the broker has the new passwords
    closer = requests.get(status["closer_status_url"], timeout=10).json()
    assert closer["state"] == "running"
    w3 = connect(status["rpc_url"])
    closer_address = (home / "keys" / "closer" / "address").read_text().strip()
    assert w3.eth.get_balance(closer_address) >= READER_FUNDING // 2  # funded by the operator


def cli(env: dict[str, str], *args: str, core: bool = False) -> subprocess.CompletedProcess[str]:
    """``pilotchain ARGS`` (``core``: the chain's commands alone, without the runner's)."""
    module = "pilotchain.cli" if core else "runner.cli"
    return subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def test_a_pilot_with_the_shared_meter_account_moves_to_accounts_of_its_own(
        stack: tuple[Path, dict[str, str]]) -> None:
    """Keys as `pilotchain init` made them before per-meter accounts (the shared `meter`
    password, no monitor): the next up keeps the chain and the services working, the broker
    no longer takes the shared password, a meter registered now gets its own account at
    once, and one registered before gets one with `meters mqtt-password --registered`."""
    home, env = stack
    if run("status", env).returncode != 0:  # run alone, not after the tests above
        first = run("up", env)
        assert first.returncode == 0, first.stderr + first.stdout
    assert run("down", env).returncode == 0
    genesis = (home / "genesis.json").read_bytes()
    mqtt_keys = home / "keys" / "mqtt"
    for newer in ("monitor.password", "meters.passwd"):
        (mqtt_keys / newer).unlink(missing_ok=True)
    shared = secrets.token_hex(24)
    (mqtt_keys / "meter.password").write_text(shared + "\n")

    again = run("up", env)
    assert again.returncode == 0, again.stderr + again.stdout
    assert (home / "genesis.json").read_bytes() == genesis
    assert (mqtt_keys / "monitor.password").is_file()
    status = json.loads(run("status", env, "--json").stdout)
    subscriber = requests.get(status["ingest_mqtt_status_url"], timeout=10).json()
    assert subscriber["state"] == "running"
    connection = MqttConnection(port=int(env["MQTT_PORT"]))
    assert connect_check(connection, "meter", shared) != 0  # the shared account is retired

    # Registered now: its account comes with it, and the running broker takes it at once.
    meter, participant = "0x" + secrets.token_hex(32), str(uuid.uuid4())
    registered = cli(env, "meters", "register", meter, Account.create().address, participant)
    assert registered.returncode == 0, registered.stderr
    found = re.search(rf"MQTT account {meter}, password ([0-9a-f]+) \(shown once\)",
                      registered.stdout)
    assert found and "The broker took them." in registered.stdout, registered.stdout
    assert connect_check(connection, meter, found.group(1)) == 0
    assert found.group(1) not in (mqtt_keys / "meters.passwd").read_text()  # only its hash

    # Registered before (the core command issues no account): --registered gives it one.
    before = "0x" + secrets.token_hex(32)
    old = cli(env, "meters", "register", before, Account.create().address,
              str(uuid.uuid4()), core=True)
    assert old.returncode == 0, old.stderr
    handover = home / "handover.csv"
    moved = cli(env, "meters", "mqtt-password", "--registered", "--out", str(handover))
    assert moved.returncode == 0, moved.stderr
    rows = handover.read_text().splitlines()
    assert rows[0] == "account,password,topic" and len(rows) == 2  # the new meter only
    account, password, topic = rows[1].split(",")
    assert (account, topic) == (before, f"pilotchain/meters/{before}/readings")
    assert connect_check(connection, before, password) == 0
    assert oct(handover.stat().st_mode)[-3:] == "600"
