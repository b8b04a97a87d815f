"""The grid operator's commands and the slot closer on the real chain.

Each test deploys its own Settlement with a short slot (``setSlotSeconds``) and no close
delay, so slots in the recent past are due at once; trades and readings are created here, and
what the commands print, export and leave on chain is checked against amounts worked out by
hand from them.

Most commands run in this process (``Pilot.command``): a fresh interpreter pays about three
seconds of imports per command, and the routine runs thirty. The process edge itself (exit
codes, stdout, stderr) is covered by the few that run as ``pilotchain`` processes
(``Pilot.cli``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from bridge_fixtures import NOTICE_SECONDS, START_SECONDS, ServiceProcess, send, send_calls
from eth_account import Account
from eth_account.signers.local import LocalAccount
from split import HEAL_BLOCKS, HEAL_WHY, Nodes, wait
from web3 import Web3
from web3.contract import Contract

from closer.config import CloserSettings
from pilotchain.chain import Sender, connect, wait_for
from pilotchain.closing import SlotCloser
from pilotchain.contract import (
    Deployment,
    compile_settlement,
    deploy_settlement,
    save_deployment,
    settlement_contract,
)
from pilotchain.deployment import ensure_account
from pilotchain.metering import OPERATOR, WH, Domain, MeterReading, meter_id, sign_reading
from pilotchain.operator import SettlementClient, format_time
from pilotchain.trades import TradeRecord, uuid_to_bytes32
from runner import cli as runner_cli
from runner.localnet import RPC_NODE, LocalNetwork
from runner.ports import free_port

SLOT = 30
CT = 10**18
# A service stops within its container's grace period (docker-compose.yml: 30 s) or is killed.
STOP_SECONDS = 30


@dataclass
class Pilot:
    """A fresh Settlement on the shared chain, its record, and the operator's sender."""

    net: LocalNetwork
    w3: Web3
    contract: Contract
    deployment: Deployment
    record: Path
    home: Path
    operator: LocalAccount
    admin: Sender

    def send(self, name: str, *args: Any, sender: Sender | None = None) -> Any:
        return send(self.w3, sender or self.admin, self.contract, name, *args)

    def send_all(self, *calls: tuple[Any, ...]) -> list[Any]:
        """The operator's calls, each ``(name, *args)``, back to back, then all awaited."""
        return send_calls(self.w3, self.admin, self.contract, *calls)

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": os.environ.get("HOME", "/tmp"), "PILOTCHAIN_HOME": str(self.home),
                "KEYS_DIR": str(self.net.settings.keys_dir), "RPC_URL": self.net.rpc_url,
                "DEPLOYMENT_FILE": str(self.record),
                "NATIVE_DATA_DIR": str(self.home / "data")}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "runner.cli", *args], env=self.env(),
                              capture_output=True, text=True, timeout=300, check=False)

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The same command as ``cli``, run by the CLI's ``main`` in this process, with the
        same environment and its exit status, stdout and stderr captured alike."""
        out, err = io.StringIO(), io.StringIO()
        with mock.patch.dict(os.environ, self.env(), clear=True), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = runner_cli.main(list(args))
            except SystemExit as exit_:  # argparse refusing a malformed value
                status = exit_.code if isinstance(exit_.code, int) else 1
        return subprocess.CompletedProcess(["pilotchain", *args], status, out.getvalue(),
                                           err.getvalue())

    def head_time(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def nonce(self) -> int:
        return self.w3.eth.get_transaction_count(self.operator.address, "pending")

    def readings(self, meter: bytes, key: LocalAccount, registers: dict[int, tuple[int, int]]
                 ) -> None:
        """Submit signed boundary readings (the operator holds READER_ROLE here)."""
        self.send(*self.readings_call(meter, key, registers))

    def readings_call(self, meter: bytes, key: LocalAccount,
                      registers: dict[int, tuple[int, int]]) -> tuple[Any, ...]:
        """The submitReadings call of :meth:`readings`, for :meth:`send_all`."""
        domain = Domain(self.deployment.chain_id, self.deployment.address)
        signed = [sign_reading(MeterReading(meter, t, *registers[t]), key, domain)
                  for t in sorted(registers)]
        return ("submitReadings", [r.as_contract_tuple() for r in signed])

    def closings(self) -> Counter[tuple[bytes, int]]:
        """How often each (participant, slot) was closed, from the events."""
        found: Counter[tuple[bytes, int]] = Counter()
        for event in (self.contract.events.SlotBalanced, self.contract.events.SlotUnmetered):
            for log in event().get_logs(from_block=self.deployment.block_number):
                found[(bytes(log["args"]["participant"]), log["args"]["slot"])] += 1
        return found

    def status(self, participant: bytes, slot: int) -> int:
        return int(self.contract.functions.slotOf(participant, slot).call()[0])


@pytest.fixture
def pilot(chain: LocalNetwork, tmp_path: Path) -> Pilot:
    return make_pilot(chain, tmp_path)


def make_pilot(net: LocalNetwork, home: Path) -> Pilot:
    """A fresh Settlement on ``net``, the operator its admin and reader."""
    w3 = connect(net.rpc_url)
    operator = net.keys.role("operator").unlock()
    deployment = deploy_settlement(w3, operator, operator.address, reader=operator.address,
                                   compiled=compile_settlement())
    record = home / "settlement.json"
    save_deployment(deployment, record)
    target = Pilot(net, w3, settlement_contract(w3, deployment), deployment, record,
                   home, operator, Sender(w3, operator))
    target.send_all(("setSlotSeconds", SLOT), ("setCloseDelay", 0))
    return target


def trade(market: uuid.UUID, slot: int, seller: uuid.UUID, buyer: uuid.UUID, wh: int,
          cents: int) -> tuple[Any, ...]:
    return TradeRecord(uuid.uuid4(), market, slot, seller, buyer, seller, buyer, wh * WH,
                       cents * CT, 0).as_contract_tuple()


def cents(text: str) -> int:
    """A CSV amount back in the contract's unit (exact)."""
    scaled = Decimal(text) * CT
    assert scaled == scaled.to_integral_value()
    return int(scaled)


def test_the_operators_routine_by_command(pilot: Pilot, tmp_path: Path) -> None:
    house_a, house_b, market, supplier = (uuid.uuid4() for _ in range(4))
    a, b = uuid_to_bytes32(house_a), uuid_to_bytes32(house_b)
    key_a, key_b = Account.create(), Account.create()
    meter_a, meter_b = uuid.uuid4(), uuid.uuid4()

    # Registering by command puts the meter on chain, home area the house itself.
    done = pilot.cli("meters", "register", str(meter_a), key_a.address, str(house_a))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Registered meter {meter_a}: participant {house_a}")
    info = pilot.contract.functions.meterOf(meter_id(meter_a)).call()
    assert (info[0], bytes(info[3])) == (key_a.address, a)
    assert bytes(pilot.contract.functions.homeAreaOf(a).call()) == a
    done = pilot.command("meters", "register", "0x" + meter_id(meter_b).hex(), key_b.address,
                     str(house_b), "--home-area", str(house_b))
    assert done.returncode == 0, done.stderr

    # Bad inputs: one sentence each, exit 2 for a malformed value, 1 for a refusal; no
    # transaction is sent.
    nonce = pilot.nonce()
    s0 = pilot.head_time() // SLOT * SLOT - 6 * SLOT
    refused = {
        ("meters", "register", str(uuid.uuid4()), "0x1234", str(house_a)):
            (2, "The address '0x1234' is not an Ethereum address"),
        ("meters", "register", "meter-7", key_a.address, str(house_a)):
            (2, "The meter id 'meter-7' is neither a uuid nor 0x and 64 hex digits."),
        ("meters", "register", str(meter_a), key_a.address, str(uuid.uuid4())):
            (1, f"the meter {meter_a} is already registered"),
        ("meters", "register", str(uuid.uuid4()), key_a.address, str(house_a)):
            (1, f"participant {house_a} still has the active meter {meter_a}"),
        ("meters", "deactivate", str(uuid.uuid4()), "--at", str(s0)):
            (1, "is registered in Settlement"),
        ("meters", "replace", str(meter_a), str(uuid.uuid4()), key_b.address, "--at",
         str(s0 + 7)): (1, f"{format_time(s0 + 7)} is not on a slot boundary (slots are "
                           f"{SLOT} s); use {format_time(s0)} or {format_time(s0 + SLOT)}."),
        ("meters", "deactivate", str(meter_a), "--at", "yesterday"):
            (2, "The time 'yesterday' is neither unix seconds nor ISO-8601"),
        ("rates", "set", "--from", str(s0), "--shortfall", "abc", "--grid-supply", "1"):
            (2, "The shortfall rate 'abc' is not a number of euro cents per kWh."),
        ("periods", "paid", "1", str(house_a)):
            (1, "There is no closed period 1: no period is closed yet."),
        ("periods", "close", "--end", str(s0 + 100 * SLOT)):
            (1, "a period cannot end in the future"),
    }
    for index, (argv, (status, sentence)) in enumerate(refused.items()):
        # A malformed value (exit 2) and a refusal (exit 1) as real processes; the rest alike.
        result = (pilot.cli if index in (0, 2) else pilot.command)(*argv)
        assert (result.returncode, result.stdout) == (status, ""), argv
        assert sentence in result.stderr, (argv, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 3
    assert pilot.nonce() == nonce

    # Rates by command, in decimal cents per kWh; shown back as set.
    done = pilot.command("rates", "set", "--from", format_time(s0), "--shortfall", "40",
                     "--grid-supply", "30.5", "--feed-in", "8")
    assert done.returncode == 0, done.stderr
    assert pilot.contract.functions.ratesHistory().call() == [
        (s0, 40 * CT, 30 * CT + CT // 2, 8 * CT)]
    shown = pilot.command("rates", "show")
    assert shown.stdout == (f"from {format_time(s0)}: shortfall 40, grid supply 30.5, "
                            "feed-in 8 ct/kWh\n")

    # A sells 10 Wh across its meter in s0, exports 7: a 3 Wh shortfall. In s0 + SLOT it
    # imports 2 Wh it never bought: excess. B buys 5 Wh in s0 + SLOT but read only once.
    # All the operator's (the recorder here too): one batch.
    pilot.send_all(("recordTrades", [trade(market, s0, house_a, supplier, 10, 3),
                                     trade(market, s0 + SLOT, supplier, house_b, 5, 2),
                                     trade(house_a, s0, supplier, house_a, 1, 1)]),  # inside A
                   pilot.readings_call(meter_id(meter_a), key_a, {
                       s0: (100, 50), s0 + SLOT: (100, 57), s0 + 2 * SLOT: (102, 57)}),
                   pilot.readings_call(meter_id(meter_b), key_b, {s0: (0, 0)}))

    until = s0 + 3 * SLOT
    done = pilot.command("slots", "close", "--until", str(until))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Closed 6 slots: 2 balanced, 4 unmetered, in 1 transaction(s).\n"
    assert [pilot.status(a, s) for s in (s0, s0 + SLOT, s0 + 2 * SLOT)] == [1, 1, 2]
    assert [pilot.status(b, s) for s in (s0, s0 + SLOT, s0 + 2 * SLOT)] == [2, 2, 2]
    again = pilot.command("slots", "close", "--until", str(until))
    assert again.stdout == "No slot was due and open; nothing sent.\n"
    shortfall, excess = 3 * WH * 40, 2 * WH * (30 * CT + CT // 2) // CT
    assert pilot.contract.functions.balancingOf(a).call() == [shortfall + excess, 0]
    assert pilot.contract.functions.balancingOf(OPERATOR).call() == [0, shortfall + excess]

    # Without --until, everything due up to now; no slot is closed twice.
    done = pilot.command("slots", "close")
    assert done.returncode == 0, done.stderr
    newest = pilot.head_time() // SLOT * SLOT - 2 * SLOT
    assert all(pilot.status(p, s) != 0 for p in (a, b) for s in range(s0, newest, SLOT))
    closings = pilot.closings()
    assert set(closings.values()) == {1}
    assert (a, s0 - SLOT) not in closings  # nothing before its first reading or trade

    # The period and its statements: CSV equal to statementOf, and to the trades above.
    end = pilot.head_time() // SLOT * SLOT
    done = pilot.command("periods", "close", "--end", format_time(end))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Closed period 1 at {format_time(end)} (block ")
    export = tmp_path / "period-1.csv"
    done = pilot.command("periods", "statements", "1", "--csv", str(export))
    assert done.stdout == f"Wrote 4 statements of period 1 to {export}.\n"
    with export.open() as handle:
        rows = {row["participant"]: row for row in csv.DictReader(handle)}
    supplier_id = str(supplier)
    assert rows[str(house_a)] == {
        "participant": str(house_a), "energy_sold_kwh": "0.01", "energy_bought_kwh": "0.001",
        "money_receivable_ct": "3", "money_payable_ct": "1", "balancing_charges_ct": "0.181",
        "balancing_credits_ct": "0", "net_ct": "1.819", "paid": "no"}
    assert rows[str(house_b)]["energy_bought_kwh"] == "0.005"
    assert rows[str(house_b)]["net_ct"] == "-2"
    assert rows[supplier_id]["money_receivable_ct"] == "3"
    assert rows[supplier_id]["net_ct"] == "0"
    assert rows["operator"]["balancing_credits_ct"] == "0.181"
    assert set(rows) == {str(house_a), str(house_b), supplier_id, "operator"}
    for participant, row in rows.items():
        pid = OPERATOR if participant == "operator" else uuid_to_bytes32(participant)
        on_chain = pilot.contract.functions.statementOf(1, pid).call()
        assert [cents(row[column]) for column in (
            "energy_sold_kwh", "energy_bought_kwh", "money_receivable_ct", "money_payable_ct",
            "balancing_charges_ct", "balancing_credits_ct", "net_ct")] == list(on_chain[:7])
    stdout = pilot.cli("periods", "statements", "1", "--csv", "-").stdout
    assert stdout.splitlines()[0].startswith("participant,energy_sold_kwh,")
    assert len(stdout.splitlines()) == 5

    # Paid, once.
    done = pilot.command("periods", "paid", "1", str(house_a))
    assert done.stdout == f"Marked the statement of {house_a} for period 1 paid.\n"
    assert pilot.contract.functions.statementOf(1, a).call()[7] is True
    twice = pilot.command("periods", "paid", "1", str(house_a))
    assert twice.returncode == 1
    assert f"the statement of participant {house_a} for period 1 is already marked paid." \
        in twice.stderr
    closed_twice = pilot.command("periods", "close", "--end", str(end))
    assert "the previous period already ends at" in closed_twice.stderr

    # Replacing and deactivating meters, then showing them.
    meter_a2 = uuid.uuid4()
    early = pilot.command("meters", "deactivate", str(meter_b), "--at", str(s0 - SLOT))
    assert f"the meter {meter_b} cannot end before {format_time(s0)}" in early.stderr
    done = pilot.command("meters", "replace", str(meter_a), str(meter_a2), key_b.address, "--at",
                     str(until))
    assert done.returncode == 0, done.stderr
    done = pilot.command("meters", "deactivate", str(meter_b), "--at", str(until))
    assert done.stdout.startswith(f"Deactivated meter {meter_b}")
    assert f"ended {format_time(until)}" in done.stdout
    shown = pilot.command("meters", "show", "--participant", str(house_a)).stdout.splitlines()
    assert [line.split(":")[0] for line in shown] == [f"meter {meter_a}", f"meter {meter_a2}"]
    assert f"ended {format_time(until)}; newest reading {format_time(s0 + 2 * SLOT)}" in shown[0]
    assert f"from {format_time(until)}, active; no reading yet" in shown[1]


class CloserProcess(ServiceProcess):
    """``python -m closer`` as a real process."""

    module = "closer"

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": os.environ.get("HOME", "/tmp"), **self.settings.to_env()}


# A running closer passes every second here (CLOSER_INTERVAL); a pass that finds due slots
# sends one transaction, mined in the next block or so.
CLOSE_BLOCKS = 30
CLOSE_WHY = "the slots are due; the closer looks every second and its transaction takes a block"


def test_the_closer_closes_due_slots_survives_a_restart_and_idles(pilot: Pilot,
                                                                    tmp_path: Path) -> None:
    slot = 10  # shorter than the module's: the test waits for slots to become due
    pilot.send("setSlotSeconds", slot)
    closer_key = pilot.net.keys.role("closer")
    ensure_account(pilot.w3, pilot.operator, pilot.deployment, closer_key.address, role=None)
    house = uuid.uuid4()
    pid = uuid_to_bytes32(house)
    key, meter = Account.create(), meter_id(uuid.uuid4())
    s0 = pilot.head_time() // slot * slot - 4 * slot
    pilot.send_all(("registerMeter", meter, key.address, pid, pid),
                   pilot.readings_call(meter, key, {s0: (0, 0), s0 + slot: (1, 1)}))

    chain = replace(pilot.net.settings, rpc_url_override=pilot.net.rpc_url,
                    deployment_file_override=pilot.record)
    settings = CloserSettings(chain=chain, interval=1.0, metrics_port=free_port())
    process = CloserProcess(settings, tmp_path / "closer.log")

    def closed_through(newest: int) -> bool:
        return all(pilot.status(pid, slot) != 0 for slot in range(s0, newest + 1, slot))

    def running() -> None:
        wait_for(lambda: (process.metrics() or {}).get("state") == "running" or None,
                 timeout=START_SECONDS, what=f"the closer to run; log:\n{process.log_tail()}")

    def closes(newest: int, what: str) -> None:
        """Slots through ``newest``, all due, closed by the running closer."""
        pilot.net.wait_for_blocks(lambda: closed_through(newest) or None, blocks=CLOSE_BLOCKS,
                                  what=what, why=CLOSE_WHY)

    process.start()
    try:
        running()
        first_due = pilot.head_time() // slot * slot - slot
        closes(first_due - slot, "the closer to close every due slot")
        assert pilot.status(pid, s0) == 1  # readings at both ends: balanced
        assert pilot.status(pid, s0 + slot) == 2  # none at its end: unmetered
        process.stop()

        # Readings arrive while it is down; after a restart it goes on where the chain is.
        later = pilot.head_time() // slot * slot
        pilot.readings(meter, key, {later: (5, 5), later + slot: (6, 7)})
        # Due once the chain's clock passed its end (no close delay here): a block a second.
        pilot.net.wait_for_blocks(lambda: pilot.head_time() >= later + 2 * slot or None,
                                  blocks=2 * slot + 10, what=f"slot {later} to become due",
                                  why=f"the head's time goes 1 s a block, {2 * slot} s to go")
        process.start()
        running()
        closes(later, "the restarted closer to close the slots due meanwhile")
        assert pilot.status(pid, later) == 1
        assert set(pilot.closings().values()) == {1}  # no slot closed twice

        # Nothing due (a deadline far ahead): passes go on, no transaction is sent.
        pilot.send("setCloseDelay", 10**6)

        def passes_after(count: int) -> int:
            start = int((process.metrics() or {}).get("passes") or 0)
            wait_for(lambda: int((process.metrics() or {}).get("passes") or 0) >= start + count
                     or None, timeout=NOTICE_SECONDS, what=f"{count} more passes of the closer")
            return start

        passes_after(2)  # the pass under way may have seen the old delay: let it finish
        sent = pilot.w3.eth.get_transaction_count(closer_key.address, "pending")
        passes_after(3)
        assert pilot.w3.eth.get_transaction_count(closer_key.address, "pending") == sent
        metrics = process.metrics() or {}
        assert metrics["state"] == "running" and metrics["problem"] is None
        assert metrics["balanced"] >= 1 and metrics["unmetered"] >= 1
    finally:
        process.stop()


def test_a_closer_told_to_stop_while_the_chain_will_not_mine_its_transaction_stops_at_once(
        make_network: Callable[..., LocalNetwork], tmp_path: Path) -> None:
    """SIGTERM while the closer awaits the receipt of a transaction the chain will not mine
    (two of its three signers stopped first, as ``docker compose stop`` may stop them
    alongside it): it stops within seconds, not after its two-minute wait for the receipt,
    which a container's grace period (30 s) ends with a kill."""
    pilot = make_pilot(make_network(), tmp_path)
    closer_key = pilot.net.keys.role("closer")
    ensure_account(pilot.w3, pilot.operator, pilot.deployment, closer_key.address, role=None)
    pid, key, meter = uuid_to_bytes32(uuid.uuid4()), Account.create(), meter_id(uuid.uuid4())
    pilot.send("registerMeter", meter, key.address, pid, pid)
    s0 = pilot.head_time() // SLOT * SLOT - 3 * SLOT
    pilot.readings(meter, key, {s0: (0, 0), s0 + SLOT: (1, 1)})  # s0, s0 + SLOT due
    for name in ("validator2", "validator3"):
        pilot.net.stop_node(name)  # one signer of three seals no more than one block
    chain = replace(pilot.net.settings, rpc_url_override=pilot.net.rpc_url,
                    deployment_file_override=pilot.record)
    process = CloserProcess(CloserSettings(chain=chain, interval=1.0, metrics_port=free_port()),
                            tmp_path / "closer.log")
    pending = partial(pilot.w3.eth.get_transaction_count, closer_key.address)
    process.start()
    try:
        wait_for(lambda: pending("pending") > pending("latest") or None,
                 timeout=START_SECONDS, what="the closer's transaction to wait in the RPC "
                 f"node's pool; its log:\n{process.log_tail()}")
        assert process.process is not None
        asked = time.monotonic()
        process.process.terminate()
        assert process.process.wait(timeout=STOP_SECONDS) == 0, process.log_tail()
        took = time.monotonic() - asked
        assert pending("pending") > pending("latest")  # still unmined: it did not wait
    finally:
        process.stop()
    log = process.log_tail()
    assert "Stopped before transaction" in log and log.rstrip().endswith("Stopped."), log
    print(f"the closer stopped {took:.1f} s after SIGTERM")


def test_slot_timing_by_command(pilot: Pilot) -> None:
    shown = pilot.command("slots", "timing")
    assert shown.stdout == (f"Settlement has slots of {SLOT} s, each closed 0 s after its end "
                            "at the earliest.\n"), shown.stderr
    done = pilot.command("slots", "timing", "--length", "60", "--close-delay", "5400")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ("Settlement now has slots of 60 s, each closed 5400 s after its end "
                           "at the earliest.\n")
    functions = pilot.contract.functions
    assert (functions.slotSeconds().call(), functions.closeDelay().call()) == (60, 5400)

    nonce = pilot.nonce()
    bad = pilot.command("slots", "timing", "--close-delay", "-5")
    assert bad.returncode == 2 and "'-5' is not a whole number of seconds above 0." in bad.stderr
    assert pilot.nonce() == nonce
    # Once a meter is registered, the slot length is the one gsy-e's trades were counted by.
    pilot.send("registerMeter", meter_id(uuid.uuid4()), Account.create().address,
               uuid_to_bytes32(uuid.uuid4()), uuid_to_bytes32(uuid.uuid4()))
    nonce = pilot.nonce()
    fixed = pilot.cli("slots", "timing", "--length", "900")
    assert (fixed.returncode, fixed.stdout) == (1, "")
    assert "the slot length is fixed once the first meter or rates are set." in fixed.stderr
    assert "Traceback" not in fixed.stderr
    assert pilot.nonce() == nonce
    assert functions.slotSeconds().call() == 60


def test_the_closer_follows_a_slot_length_set_after_it_started(pilot: Pilot) -> None:
    """The operator may change the slot length until the first meter is registered; a closer
    already running must close slots of the new length."""
    chain = replace(pilot.net.settings, rpc_url_override=pilot.net.rpc_url,
                    deployment_file_override=pilot.record)
    client = SettlementClient.open(chain)
    closer = SlotCloser(client, client.sender)
    assert closer.close_due().closed == 0  # nothing metered yet, slots of SLOT s so far
    length = 2 * SLOT
    pid = uuid_to_bytes32(uuid.uuid4())
    key, meter = Account.create(), meter_id(uuid.uuid4())
    s0 = pilot.head_time() // length * length - 3 * length
    pilot.send_all(("setSlotSeconds", length),
                   ("registerMeter", meter, key.address, pid, pid),
                   pilot.readings_call(meter, key, {s0: (0, 0), s0 + length: (1, 1)}))
    closer.close_all(until=s0 + length)
    assert pilot.status(pid, s0) == 1  # balanced, on the new grid


def test_the_closer_learns_of_a_meter_a_reorganisation_moved_into_a_block_it_had_read(
        make_network: Callable[..., LocalNetwork], tmp_path: Path) -> None:
    """A real reorganisation under a running closer: signer A (with the RPC node the closer
    reads) seals block n alone and the closer reads it; signers B1 and B2, split off, seal a
    heavier chain whose block n registers a meter. Healed, the RPC node takes B's chain, and
    the closer must still learn of the meter, though its event is in a block it had read, and
    close the meter's due slot. (The same happens without a split on a busy machine: an
    out-of-turn block without a transaction, replaced by the in-turn one with it.)"""
    net = make_network()
    nodes = Nodes(net)
    w3 = connect(net.rpc_url)
    operator = net.keys.role("operator").unlock()
    deployment = deploy_settlement(w3, operator, operator.address, reader=operator.address,
                                   compiled=compile_settlement())
    record = tmp_path / "settlement.json"
    save_deployment(deployment, record)
    pilot = Pilot(net, w3, settlement_contract(w3, deployment), deployment, record, tmp_path,
                  operator, Sender(w3, operator))
    slot = 10
    pilot.send_all(("setSlotSeconds", slot), ("setCloseDelay", 0))
    client = SettlementClient.open(replace(net.settings, rpc_url_override=net.rpc_url,
                                           deployment_file_override=record))
    closer = SlotCloser(client, client.sender)
    a, *b = [role.name for role in net.keys.validators()]
    side_a = [a, RPC_NODE]
    enodes = [nodes.call(name, "admin_nodeInfo")["enode"] for name in b]
    b_ids = {nodes.call(name, "admin_nodeInfo")["id"] for name in b}
    signer_a = net.keys.role(a).address.lower()
    pid = uuid_to_bytes32(uuid.uuid4())
    key, meter = Account.create(), meter_id(uuid.uuid4())
    registration = pilot.contract.encode_abi("registerMeter", args=[meter, key.address, pid, pid])
    try:
        with nodes.freezing():
            # Sealing stops with the newest two blocks B's, so that A may seal the next alone.
            nodes.call(a, "miner_stop")
            stopped = net.block_number()
            net.wait_for_blocks(
                lambda: (head := net.block_number()) > stopped + 2 and all(
                    nodes.signer(RPC_NODE, n) != signer_a for n in (head, head - 1)),
                blocks=10, what="two blocks sealed by B1 and B2",
                why="B1 and B2 take turns; A's last block is two behind within a few")
            for name in b:
                nodes.call(name, "miner_stop")

            def quiet() -> int | None:
                """The common head once no sealed block can still be on its way: a signer
                releases one at its parent's time plus the period, plus up to a second of
                Clique's out-of-turn wiggle, even after miner_stop (and one frozen before
                that would release it the moment it is thawed)."""
                heads = {nodes.w3(name).eth.block_number for name in [*side_a, *b]}
                if len(heads) != 1:
                    return None
                head = heads.pop()
                sealed_at = w3.eth.get_block(head)["timestamp"]
                return head if time.time() >= sealed_at + net.settings.block_period + 4 else None

            fork = wait(quiet, "every node at the same head, no block on its way")
            nodes.freeze(b)
            for name in side_a:
                for enode in enodes:
                    nodes.call(name, "admin_removePeer", enode)
            wait(lambda: not (nodes.peers(a) | nodes.peers(RPC_NODE)) & b_ids,
                 "side A to drop its peers on side B")
            nodes.call(a, "miner_start")
            net.wait_for_blocks(lambda: net.block_number() > fork, blocks=1,
                                what="signer A to seal a block alone",
                                why="a signer of three may seal one block alone")
            nodes.call(a, "miner_stop")
            weight_a = nodes.total_difficulty(RPC_NODE)
            closer.close_due()
            assert closer.cursor == fork + 1, "the closer did not read side A's block"
            nodes.freeze(side_a)  # before side B wakes: no connection forms in between
            nodes.thaw(b)
            tx_hash = Sender(nodes.w3(b[0]), operator).send(
                {"to": pilot.contract.address, "data": registration, "gas": 300_000})
            nonce = int(nodes.call(b[0], "eth_getTransactionByHash",
                                   tx_hash.to_0x_hex())["nonce"], 16)
            # Pending (what a signer seals from), not just known: the pool promotes a new
            # transaction a moment after taking it.
            wait(lambda: all(nodes.w3(name).eth.get_transaction_count(operator.address,
                                                                       "pending") > nonce
                             for name in b),
                 "the registration to be pending with both of side B's signers")
            for name in b:
                nodes.call(name, "miner_start")
            receipt = net.wait_for_blocks(
                lambda: nodes.receipt(b[0], tx_hash), name=b[0], blocks=1,
                what="side B to register the meter",
                why="both of B's signers hold it when they start sealing")
            assert int(receipt["blockNumber"], 16) == fork + 1, receipt
            net.wait_for_blocks(lambda: nodes.total_difficulty(b[0]) > weight_a, name=b[0],
                                blocks=3, what="side B to outweigh side A",
                                why="each of B's blocks adds at least 1, A's one block at most 2")
            nodes.thaw(side_a)
        for name in side_a:
            for enode in enodes:
                nodes.call(name, "admin_addPeer", enode)
        net.wait_for_blocks(lambda: nodes.receipt(RPC_NODE, tx_hash), name=b[0],
                            blocks=HEAL_BLOCKS, what="the RPC node to take side B's chain",
                            why=HEAL_WHY)
    finally:
        for name in [a, *b]:
            nodes.call(name, "miner_start")
    registered = w3.eth.get_block(fork + 1)["timestamp"]
    first = registered // slot * slot
    net.wait_for_blocks(lambda: pilot.head_time() >= first + slot, blocks=3 * slot,
                        what=f"the meter's first slot {first} to be due",
                        why=f"the head's time goes about 1 s a block, {slot} s to go")
    closer.close_due()
    assert pilot.status(pid, first) == 2, "the closer never closed the meter's first slot"
