"""`pilotchain reconcile`: gsy-e's own export of a run against the chain.

First without a chain: every recorded run (tests/data, each with gsy-e's export of the same
run) agrees with its export trade for trade, the settlement run only once gsy-e's rewrites
of its past markets are counted once; the recordings as gsy-e's hook alone delivered them
(no chain legs) miss exactly those legs; the reader's refusals. Then on the real chain
through the real bridge: a faithful run reconciles with exit 0 on a contract that also holds
another run, whose trades were replayed with one left out of the stream and one altered,
and reconciling that one names both and exits 1.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bridge_fixtures import (
    BridgeThread,
    Deployed,
    bridge_settings,
    publish_lines,
    wait_for_work,
    work_progress,
)
from recordings import DATA

from pilotchain.gsy_export import ExportError, find_run, read_export
from pilotchain.reconcile import reconcile
from pilotchain.settings import PROJECT_ROOT
from pilotchain.trades import parse_event, read_recording

EXPORTS = DATA / "exports"
RUNS = sorted(path.name for path in EXPORTS.iterdir())
# gsy-e's chain legs in each two-sided run: bid trades booked with no offer (accept_bid's
# `if not offer:` block), which gsy-e's own hook never reported.
LEGS = {"default_2a_two_sided": 138, "pay_as_clear_default_2a_two_sided": 7,
        "settlement_default_2a_two_sided": 166, "three_levels_two_sided": 140}


def events(run: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / f"{run}.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("run", RUNS)
def test_every_recorded_run_equals_gsy_e_s_own_books(run: str) -> None:
    export = read_export(EXPORTS / run)
    records = read_recording(DATA / f"{run}.jsonl")
    result = reconcile(export, records)
    assert result.ok, result.differences[:5]
    assert result.total("matched") == result.total("exported") == len(records) \
        == result.total("on_chain")
    assert result.other_trades == 0
    # Every market of the run has its own row, named by its path in the area tree.
    assert [tally.name.split(" / ")[0] for tally in result.markets] == ["Grid"] * len(
        result.markets) and len(result.markets) >= 3


def test_gsy_e_s_rewrites_of_its_past_markets_count_once() -> None:
    export = read_export(EXPORTS / "settlement_default_2a_two_sided")
    rows = sum(1 for path in (EXPORTS / "settlement_default_2a_two_sided").rglob("*-trades.csv")
               for _ in path.read_text().splitlines()[1:])
    assert export.rewritten_rows > 0
    assert rows == len(export.trades) + export.rewritten_rows
    assert Counter(trade.kind for trade in export.trades) == Counter(
        spot=315, settlement=99, future=83)
    assert len(export.trades) == len(read_recording(DATA / "settlement_default_2a_two_sided.jsonl"))


@pytest.mark.parametrize("run", RUNS)
def test_what_gsy_e_s_hook_alone_delivered_misses_exactly_the_chain_legs(run: str) -> None:
    """The recordings made before the plug-in reported the legs held only trades with an
    offer: reconciled, exactly the legs are missing, each named, nothing else differs."""
    offered = [parse_event(event) for event in events(run)
               if event["trade"].get("offer") is not None]
    result = reconcile(read_export(EXPORTS / run), offered)
    assert result.total("missing") == LEGS[run] == len(result.differences)
    assert {difference.kind for difference in result.differences} <= {"missing"}
    assert all("is in gsy-e's books, not on chain" in d.detail and d.exported
               for d in result.differences)


def test_an_altered_and_an_extra_trade_are_named_field_by_field() -> None:
    export = read_export(EXPORTS / "three_levels_two_sided")
    records = read_recording(DATA / "three_levels_two_sided.jsonl")
    altered = replace(records[10], energy=records[10].energy + 10**15)  # + 1 Wh
    stranger = replace(records[20], trade_id=uuid.uuid4(), buyer=records[21].seller)
    result = reconcile(export, [*records[:10], altered, *records[11:], stranger])
    by_kind = {d.kind: d for d in result.differences}
    assert sorted(by_kind) == ["different", "extra"] and len(result.differences) == 2
    different, extra = by_kind["different"], by_kind["extra"]
    assert different.trade_id == str(altered.trade_id)
    assert different.detail.startswith("energy: export ")
    assert "; rate: export " in different.detail  # the same price over more energy
    assert extra.trade_id == str(stranger.trade_id)
    assert extra.detail.endswith("is on chain, not in gsy-e's books")


def test_an_unreadable_export_is_refused_with_a_sentence(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="is not a directory"):
        find_run(tmp_path / "nowhere")
    with pytest.raises(ExportError, match=r"holds no gsy-e export: no setup_file\.json"):
        find_run(tmp_path)
    for name in ("2026-12-07T01:00", "2026-12-07T02:00"):
        shutil.copytree(EXPORTS / "default_2a_two_sided", tmp_path / "runs" / name)
    with pytest.raises(ExportError, match=r"holds the exports of 2 runs \(2026-12-07T01:00, "):
        find_run(tmp_path / "runs")
    assert find_run(tmp_path / "runs" / "2026-12-07T01:00").name == "2026-12-07T01:00"

    broken = tmp_path / "broken"
    shutil.copytree(EXPORTS / "default_2a_two_sided", broken)
    trades = broken / "grid-trades.csv"
    lines = trades.read_text().splitlines()
    trades.write_text("\n".join([lines[0], lines[1].replace("Cell Tower", "Nobody Tower"),
                                 *lines[2:]]) + "\n")
    with pytest.raises(ExportError, match=r"grid-trades.csv, line 2: the buyer 'Nobody Tower' "
                                          r"is no area of the run"):
        read_export(broken)
    trades.write_text("slot,when,what\n")
    with pytest.raises(ExportError, match="does not have gsy-e's trade columns"):
        read_export(broken)
    (broken / "grid.csv").unlink()
    with pytest.raises(ExportError, match=r"has no grid\.csv for the market 'Grid'"):
        read_export(broken)


# --- on the real chain, through the real bridge --------------------------------------------


def run_reconcile(target: Deployed, export: Path, *args: str
                  ) -> subprocess.CompletedProcess[str]:
    """``pilotchain reconcile`` as a researcher runs it."""
    env = {**os.environ, "RPC_URL": target.net.rpc_url,
           "CHAIN_ID": str(target.net.settings.chain_id),
           "DEPLOYMENT_FILE": str(target.record)}
    return subprocess.run([sys.executable, "-m", "runner.cli", "reconcile", str(export),
                           *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=180, check=False)


def test_reconcile_passes_a_faithful_run_and_names_a_lost_and_an_altered_trade(
        deployed: Deployed, redis_url: str, tmp_path: Path) -> None:
    faithful = (DATA / "three_levels_two_sided.jsonl").read_text().splitlines()
    other = (DATA / "settlement_default_2a_two_sided.jsonl").read_text().splitlines()
    lost = json.loads(other[40])
    altered = json.loads(other[41])
    altered["trade"]["energy"] = altered["trade"]["energy"] * 2
    altered["trade"]["price"] = altered["trade"]["price"] * 2
    tampered = [*other[:40], json.dumps(altered), *other[42:]]
    publish_lines(redis_url, faithful + tampered)
    expected = len(faithful) + len(tampered)
    with BridgeThread(bridge_settings(deployed, redis_url)) as metrics:
        wait_for_work(deployed.net, lambda: metrics.get("settled") == expected,
                      progress=work_progress(metrics),
                      what=f"the bridge to settle the {expected} trades of both runs")

    good = run_reconcile(deployed, EXPORTS / "three_levels_two_sided")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "The chain holds exactly gsy-e's books for this run." in good.stdout
    assert "Grid / Community / House 1" in good.stdout
    # gsy-e, chain, matched, missing, extra, different, not exported
    assert re.search(r"\n  all markets +452 +452 +452 +0 +0 +0 +0\n", good.stdout), good.stdout

    report = tmp_path / "differences.csv"
    bad = run_reconcile(deployed, EXPORTS / "settlement_default_2a_two_sided", "--csv",
                        str(report))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "2 difference(s) between gsy-e's books and the chain." in bad.stdout
    rows = list(csv.DictReader(io.StringIO(report.read_text())))
    assert sorted(row["kind"] for row in rows) == ["different", "missing"]
    by_kind = {row["kind"]: row for row in rows}
    lost_trade = lost["trade"]
    assert by_kind["missing"]["detail"].startswith(
        f"{lost_trade['seller']['name']} ({lost_trade['seller']['origin']}) -> "
        f"{lost_trade['buyer']['name']} ({lost_trade['buyer']['origin']}), ")
    assert by_kind["different"]["trade_id"] == altered["trade"]["id"]
    assert by_kind["different"]["detail"].startswith("energy: export ")
    assert "MISSING" in bad.stdout and "DIFFERENT" in bad.stdout
