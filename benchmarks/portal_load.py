"""The participant portal at scale: 1,000 participants and 200,000 trades on the real chain,
one participant in 10,000 of them; response times of that participant's pages and API and of
the operator's overview, with SQLite and with PostgreSQL, and the indexer's catch-up speed.

    .venv/bin/python benchmarks/portal_load.py [--participants 1000] [--trades 200000]
        [--busy 10000] [--requests 60] [--gas-limit 300000000]

Starts its own network (the project's LocalNetwork: three signers and the RPC node, 1 s
blocks, free ports, a temporary directory) with a block gas limit of ``--gas-limit`` (five
times the default, so the trades go on chain in about half the time; batches are kept in
flight so blocks stay under the gas target and the base fee does not climb), deploys
Settlement and records the trades with ``recordTrades`` batches of 400 from the bridge's key.
Billing period 1 is closed half-way. Every participant's wallet is registered on chain (the
busy participant's its own), so the operator's overview lists all of them, each with its net
of the open period.

Then, for each engine (a SQLite file; a database on a private PostgreSQL server,
``runner.postgres``):

1. **catch-up**: the indexer (``portal.indexer.Indexer``, its default page of 500 blocks, no
   confirmations to wait for) follows the chain's events from the deployment block to the
   head; trades indexed per second.
2. **load**: the portal under real gunicorn (its default 2 gthread workers of 4 threads);
   the busy participant and the grid operator sign in with their wallets (EIP-4361), then each
   route is asked ``--requests`` times in turn, one request at a time: p50/p95/p99 per route.

**Baseline**, measured in the same run: the busy participant's first page of trades answered
without the index, by scanning the chain's logs (``eth_getLogs`` on the seller and buyer
topics from the deployment block, decoded and ordered): what the portal avoids.

Prints the figures, writes ``portal_load.json`` and ``portal_load.png`` under ``--out``
(default ``benchmarks/results/``; the plot also goes to ``docs/img/`` with ``--doc-plot``)
and stops every process it started, also on failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests
from bridge_throughput import _quantile
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from web3 import Web3

from pilotchain.chain import Sender, connect, fees_for, wait_for_receipt
from pilotchain.config import ChainSettings
from pilotchain.contract import (
    Deployment,
    deploy_settlement,
    save_deployment,
    settlement_contract,
)
from pilotchain.settings import PROJECT_ROOT
from pilotchain.settlement import SettlementABI
from pilotchain.trades import TRADE_SETTLED_TOPIC, TradeRecord, uuid_to_bytes32
from portal.config import PortalSettings
from portal.db import Database
from portal.indexer import Indexer
from portal.statement import StatementDocument, render
from portal.web.config import WebSettings
from runner.localnet import LocalNetwork
from runner.portal import PortalWebService
from runner.ports import Ports, free_port
from runner.postgres import PostgresServer

SEED = 9
SLOT = 900
BATCH = 400  # trades per recordTrades: under geth's 128 KiB per transaction
MARKETS = 4
WH = 10**15  # one Wh in the contract's energy unit (kWh * 10**18)
CT = 10**18
TARGET_P95_S = 0.3
PDF_REQUESTS = 5


# --- the trades ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Community:
    participants: list[uuid.UUID]
    markets: list[uuid.UUID]
    trades: list[TradeRecord]

    @property
    def busy(self) -> uuid.UUID:
        return self.participants[0]


def make_community(participants: int, trades: int, busy: int, rng: random.Random,
                   first_slot: int) -> Community:
    """``trades`` trades between ``participants`` random participants; participant 0 sells
    or buys in ``busy`` of them (spread evenly), the others pick two of the rest at random.
    Slots advance one every ``participants`` trades, as a community trading each slot."""
    people = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(participants)]
    markets = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(MARKETS)]
    every = max(1, trades // busy)
    made = []
    for i in range(trades):
        if i % every == 0 and i // every < busy:
            other = rng.choice(people[1:])
            seller, buyer = (people[0], other) if rng.random() < 0.5 else (other, people[0])
        else:
            seller, buyer = rng.sample(people[1:], 2)
        energy = rng.randint(1, 5000) * WH
        made.append(TradeRecord(uuid.UUID(int=rng.getrandbits(128), version=4),
                                rng.choice(markets), first_slot + (i // participants) * SLOT,
                                seller, buyer, seller, buyer, energy,
                                energy // WH * rng.randint(10, 40) * CT // 1000, 0))
    return Community(people, markets, made)


def put_on_chain(net: LocalNetwork, deployment: Deployment, trades: Sequence[TradeRecord],
                 window: int) -> dict[str, Any]:
    """Record ``trades`` in batches, ``window`` transactions in flight (each one's gas
    estimated while the ones before it are in flight, so nothing else may change the
    contract's state meanwhile). Returns the time taken and the head."""
    w3 = connect(net.rpc_url)
    sender = Sender(w3, net.keys.role("bridge").unlock())
    abi = deployment.load_abi()
    batches = [trades[i:i + BATCH] for i in range(0, len(trades), BATCH)]
    fees = fees_for(w3.eth.get_block("latest")["baseFeePerGas"], headroom=8)
    started = time.monotonic()
    pending: deque[Any] = deque()
    done = 0
    for index, batch in enumerate(batches):
        pending.append(sender.send({"to": deployment.address,
                                    "data": SettlementABI(abi).record_trades(batch)}, fees=fees))
        while pending and (len(pending) >= window or index == len(batches) - 1):
            tx_hash = pending.popleft()
            if wait_for_receipt(w3, tx_hash, timeout=300)["status"] != 1:
                raise RuntimeError(f"recordTrades {tx_hash.to_0x_hex()} reverted.")
            done += 1
            if done % 25 == 0:
                print(f"  {done * BATCH} trades on chain", flush=True)
    seconds = time.monotonic() - started
    return {"trades": len(trades), "transactions": len(batches), "seconds": round(seconds, 1),
            "trades_per_s": round(len(trades) / seconds, 1),
            "head": w3.eth.block_number}


def register_everyone(net: LocalNetwork, deployment: Deployment, community: Community,
                      busy_wallet: str, window: int) -> int:
    """Register a wallet for every participant, so that the operator's overview lists all of
    them (each with its bill of the open period), as the back office of a 1,000-participant
    community would: the busy participant's own wallet, fresh addresses for the others.
    ``window`` transactions in flight. Returns how many were registered."""
    w3 = connect(net.rpc_url)
    sender = Sender(w3, net.keys.role("operator").unlock())
    abi = SettlementABI(deployment.load_abi())
    fees = fees_for(w3.eth.get_block("latest")["baseFeePerGas"], headroom=8)
    pending: deque[Any] = deque()
    for index, person in enumerate(community.participants):
        wallet = busy_wallet if person == community.busy else Account.create().address
        pending.append(sender.send({"to": deployment.address, "data": abi.register_participant(
            uuid_to_bytes32(person), wallet)}, fees=fees))
        while pending and (len(pending) >= window
                           or index == len(community.participants) - 1):
            if wait_for_receipt(w3, pending.popleft(), timeout=300)["status"] != 1:
                raise RuntimeError("registerParticipant reverted.")
    return len(community.participants)


def send_admin(net: LocalNetwork, deployment: Deployment, name: str, *args: Any) -> None:
    w3 = connect(net.rpc_url)
    contract = settlement_contract(w3, deployment)
    sender = Sender(w3, net.keys.role("operator").unlock())
    receipt = wait_for_receipt(w3, sender.send({
        "to": deployment.address, "data": contract.encode_abi(name, args=list(args))}),
        timeout=120)
    if receipt["status"] != 1:
        raise RuntimeError(f"{name} reverted.")


# --- the baseline: the participant's trades straight from the chain's logs ------------------


def trades_from_logs(w3: Web3, deployment: Deployment, participant: uuid.UUID,
                     per_page: int) -> list[tuple[int, int]]:
    """The first page of the participant's trades as (block, log index), found with
    ``eth_getLogs`` on the seller topic and on the buyer topic over the whole chain."""
    topic = "0x" + uuid_to_bytes32(participant).hex()
    found = []
    for topics in ([TRADE_SETTLED_TOPIC, None, topic], [TRADE_SETTLED_TOPIC, None, None, topic]):
        found += w3.eth.get_logs({"address": deployment.address,
                                  "fromBlock": deployment.block_number, "toBlock": "latest",
                                  "topics": topics})  # type: ignore[typeddict-item]
    return sorted((int(log["blockNumber"]), int(log["logIndex"])) for log in found)[:per_page]


# --- the portal under load --------------------------------------------------------------------


class Client:
    """A wallet's browser: signs in with EIP-4361 and keeps the cookie and CSRF token."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.http.trust_env = False
        self.csrf = ""

    def sign_in(self, account: LocalAccount) -> dict[str, Any]:
        self.csrf = self.http.get(self.url + "/api/me", timeout=30).json()["csrf_token"]
        headers = {"X-CSRFToken": self.csrf}
        message = self.http.post(self.url + "/api/auth/challenge", headers=headers, timeout=30,
                                 json={"address": account.address}).json()["message"]
        signature = Account.sign_message(encode_defunct(text=message), account.key).signature
        reply = self.http.post(self.url + "/api/auth/verify", headers=headers, timeout=30,
                               json={"message": message, "signature": "0x" + signature.hex()})
        if reply.status_code != 200:
            raise RuntimeError(f"Sign-in of {account.address} failed: {reply.text}")
        body: dict[str, Any] = reply.json()
        return body

    def time(self, path: str) -> tuple[float, int]:
        started = time.perf_counter()
        reply = self.http.get(self.url + path, timeout=60)
        elapsed = time.perf_counter() - started
        if reply.status_code != 200:
            raise RuntimeError(f"GET {path} answered {reply.status_code}: {reply.text[:300]}")
        return elapsed, len(reply.content)


def routes(community: Community, total: int, per_page: int) -> dict[str, tuple[str, str]]:
    """Name -> (who asks, path): the busy participant's pages and API, the operator's."""
    p = f"/api/participants/{community.busy}"
    last = max(1, -(-total // per_page))
    market = community.markets[0]
    return {
        "page /": ("participant", "/"),
        "bill": ("participant", f"{p}/bill"),
        "trades first page": ("participant", f"{p}/trades"),
        "trades middle page": ("participant", f"{p}/trades?page={max(1, last // 2)}"),
        "trades last page": ("participant", f"{p}/trades?page={last}"),
        "trades by market": ("participant", f"{p}/trades?market={market}"),
        "trades by market, last page": ("participant",
                                        f"{p}/trades?market={market}&page={last // MARKETS}"),
        "trades of period 1": ("participant", f"{p}/trades?period=1"),
        "trades of the open period, last page": ("participant",
                                                 f"{p}/trades?period=open&page={last // 2}"),
        "period at a glance, period 1": ("participant", f"{p}/summary?period=1"),
        "period at a glance, open period": ("participant", f"{p}/summary?period=open"),
        "slots": ("participant", f"{p}/slots"),
        "statements": ("participant", f"{p}/statements"),
        "trades.csv (all)": ("participant", f"{p}/trades.csv"),
        "operator overview": ("operator", "/api/operator/overview"),
    }


def load(url: str, clients: dict[str, Client], paths: dict[str, tuple[str, str]],
         count: int) -> dict[str, Any]:
    """Each route ``count`` times (after two warm-up requests), one request at a time,
    routes interleaved so a passing disturbance of the machine hits them all alike."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    sizes: dict[str, int] = {}
    for who, path in paths.values():
        for _ in range(2):
            clients[who].time(path)
    for _ in range(count):
        for name, (who, path) in paths.items():
            elapsed, sizes[name] = clients[who].time(path)
            times[name].append(elapsed)
    return {name: summary(values) | {"bytes": sizes[name], "path": paths[name][1]}
            for name, values in times.items()}


def summary(values: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {"n": len(ordered), **{f"p{q}_ms": round(1000 * _quantile(ordered, q / 100), 1)
                                  for q in (50, 95, 99)},
            "max_ms": round(1000 * ordered[-1], 1)}


def portal_env(net: LocalNetwork, record: Path, database_url: str, home: Path
               ) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"), "PILOTCHAIN_HOME": str(home),
            "RPC_URL": net.rpc_url, "CHAIN_ID": str(net.settings.chain_id),
            "NETWORK_NAME": net.settings.network_name, "DEPLOYMENT_FILE": str(record),
            "PORTAL_DATABASE_URL": database_url, "PORTAL_PORT": str(free_port()),
            "PORTAL_METRICS_PORT": str(free_port()),
            "PORTAL_SECRET_FILE": str(home / "portal-secret"),
            # Plain HTTP on 127.0.0.1: the client would not send back a Secure cookie.
            "PORTAL_SECURE_COOKIES": "false"}


def run_engine(engine: str, database_url: str, net: LocalNetwork, record: Path, home: Path,
               community: Community, wallets: dict[str, LocalAccount], count: int
               ) -> dict[str, Any]:
    chain = dataclasses.replace(net.settings, rpc_url_override=net.rpc_url,
                                deployment_file_override=record)
    indexer = Indexer(PortalSettings(chain=chain, database_url_override=database_url,
                                     confirmations=0))
    started = time.monotonic()
    try:
        cursor = indexer.catch_up()
    finally:
        indexer.close()
    seconds = time.monotonic() - started
    db = Database(database_url)
    try:
        indexed = db.count("trades")
    finally:
        db.close()
    if indexed != len(community.trades):
        raise RuntimeError(f"{engine}: {indexed} trades indexed, {len(community.trades)} "
                           "on chain.")
    result: dict[str, Any] = {"catch_up": {
        "trades": indexed, "blocks": cursor.block_number, "seconds": round(seconds, 1),
        "trades_per_s": round(indexed / seconds, 1)}}
    print(f"{engine}: indexed {indexed} trades in {seconds:.1f} s "
          f"({indexed / seconds:.0f} trades/s)", flush=True)
    env = portal_env(net, record, database_url, home / engine)
    service = PortalWebService(WebSettings.from_env(env), home / engine / "pids", env)
    try:
        service.start(net)
        clients = {who: Client(service.url) for who in wallets}
        for who, account in wallets.items():
            clients[who].sign_in(account)
        total = sum(1 for t in community.trades if community.busy in (t.seller, t.buyer))
        result["routes"] = load(service.url, clients, routes(community, total, 50), count)
        result["overview"] = check_overview(clients["operator"], community)
        # The PDF of period 1 (half of the busy participant's trades), a few times: seconds
        # of drawing each, so not among the 300 ms routes.
        pdf = f"/api/participants/{community.busy}/statements/1.pdf"
        timed = [clients["participant"].time(pdf) for _ in range(PDF_REQUESTS)]
        result["statement_pdf"] = summary([t for t, _ in timed]) | {
            "bytes": timed[-1][1], "trades": sum(
                1 for t in community.trades[:len(community.trades) // 2]
                if community.busy in (t.seller, t.buyer))}
    finally:
        service.stop()
    return result


def check_overview(client: Client, community: Community) -> dict[str, Any]:
    """The overview lists every participant, each with its net of the open period, which
    for every one of them is its trades since period 1 was closed (the second half):
    received less paid. Raises on any difference."""
    view = client.http.get(client.url + "/api/operator/overview", timeout=60).json()
    nets = {p["participant"]: int(p["open_period"]["net"]) for p in view["participants"]}
    wanted = {str(person): 0 for person in community.participants}
    for trade in community.trades[len(community.trades) // 2:]:
        wanted[str(trade.seller)] += trade.price
        wanted[str(trade.buyer)] -= trade.price
    if nets != wanted:
        wrong = sorted(p for p in wanted if nets.get(p) != wanted[p])
        raise RuntimeError(f"The overview's open-period nets differ for {len(wrong)} "
                           f"participants, e.g. {wrong[:3]}.")
    return {"participants": len(nets), "nonzero_nets": sum(1 for n in nets.values() if n)}


def time_pdf_render(community: Community, trades: int) -> dict[str, Any]:
    """portal.statement.render of a statement with ``trades`` of the busy participant's
    trades, in this process (what the PDF route spends drawing): the issue's 10,000-trade
    statement."""
    mine = [t for t in community.trades if community.busy in (t.seller, t.buyer)][:trades]
    rows = [{"seller": str(t.seller), "buyer": str(t.buyer), "market": str(t.market),
             "time_slot": t.time_slot, "energy": t.energy, "price": t.price} for t in mine]
    statement = {"end_slot": max(t.time_slot for t in mine) + SLOT, "paid": False, **{
        key: 0 for key in ("energy_sold", "energy_bought", "money_receivable",
                           "money_payable", "balancing_charges", "balancing_credits",
                           "net")}}
    document = StatementDocument(
        network="PilotChain", contract="0x" + "00" * 20, chain_id=8765,
        participant=str(community.busy), name="House 1", period=1, start_slot=None,
        statement=statement, close_tx="0x" + "00" * 32, close_block=1, trades=rows,
        names={}, balancing=[])
    times = []
    for _ in range(3):
        started = time.perf_counter()
        size = len(render(document))
        times.append(time.perf_counter() - started)
    return {"trades": len(rows), "bytes": size, "seconds": [round(t, 2) for t in times]}


# --- report ----------------------------------------------------------------------------------


def print_report(result: dict[str, Any]) -> None:
    c = result["chain"]
    print(f"\nchain (recordTrades, {BATCH} a transaction): {c['trades']} trades in "
          f"{c['seconds']} s "
          f"({result['chain']['trades_per_s']} trades/s)")
    base = result["baseline"]["p50_ms"]
    print(f"baseline (eth_getLogs, first page of the busy participant's trades): "
          f"p50 {base} ms")
    for engine in ("sqlite", "postgresql"):
        r = result[engine]
        print(f"\n{engine}: catch-up {r['catch_up']['trades_per_s']} trades/s")
        print(f"  {'route':40} {'p50':>8} {'p95':>8} {'p99':>8}  (ms)")
        for name, s in r["routes"].items():
            flag = "" if s["p95_ms"] < 1000 * TARGET_P95_S else "  MISS"
            print(f"  {name:40} {s['p50_ms']:8.1f} {s['p95_ms']:8.1f} {s['p99_ms']:8.1f}{flag}")
        print(f"  operator overview: {r['overview']['participants']} participants, each with "
              f"its open-period net ({r['overview']['nonzero_nets']} not zero), all as the "
              "trades say")
        first = r["routes"]["trades first page"]["p50_ms"]
        print(f"  first page of trades: {base / first:.0f}x faster than the baseline")
        pdf = r["statement_pdf"]
        print(f"  statement PDF of period 1 ({pdf['trades']} trades, {pdf['bytes']} bytes): "
              f"p50 {pdf['p50_ms']} ms, max {pdf['max_ms']} ms")
    render_ = result["pdf_render"]
    print(f"\nPDF of a {render_['trades']}-trade statement drawn in-process: "
          f"{render_['seconds']} s ({render_['bytes']} bytes)")


def plot(result: dict[str, Any], paths: Sequence[Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["sqlite"]["routes"])
    fig, ax = plt.subplots(figsize=(12, 7))
    height = 0.38
    for offset, engine in ((-height / 2, "sqlite"), (height / 2, "postgresql")):
        routes_ = result[engine]["routes"]
        ys = [i + offset for i in range(len(names))]
        ax.barh(ys, [routes_[n]["p95_ms"] for n in names], height=height,
                label=f"{engine} p95 (catch-up {result[engine]['catch_up']['trades_per_s']:.0f}"
                      " trades/s)")
        ax.plot([routes_[n]["p50_ms"] for n in names], ys, "k|", markersize=9)
    ax.axvline(1000 * TARGET_P95_S, color="red", linestyle="--", label="target p95 300 ms")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("response time (ms, log scale); bar p95, tick p50")
    c = result["config"]
    ax.set_title(f"Portal under gunicorn: {c['participants']} participants, {c['trades']} "
                 f"trades, busy participant in {c['busy']}; baseline eth_getLogs p50 "
                 f"{result['baseline']['p50_ms']:.0f} ms")
    ax.legend(loc="lower right")
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=90)


# --- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=1000)
    parser.add_argument("--trades", type=int, default=200_000)
    parser.add_argument("--busy", type=int, default=10_000,
                        help="trades of the participant whose pages are measured")
    parser.add_argument("--requests", type=int, default=60, help="requests per route")
    parser.add_argument("--baseline", type=int, default=5, help="baseline repetitions")
    parser.add_argument("--gas-limit", type=int, default=300_000_000)
    parser.add_argument("--window", type=int, default=8,
                        help="recordTrades transactions in flight while loading")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "benchmarks" / "results")
    parser.add_argument("--doc-plot", action="store_true",
                        help="also write the plot to docs/img/portal_load.png")
    args = parser.parse_args(argv)
    if args.busy > args.trades or args.participants < 3:
        parser.error("--busy must not exceed --trades, and there must be 3 participants.")
    rng = random.Random(SEED)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="portal-bench-") as tmp:
        home = Path(tmp)
        settings = dataclasses.replace(ChainSettings(), block_period=1,
                                       gas_limit=args.gas_limit, keys_dir=home / "keys",
                                       genesis_file=home / "genesis.json",
                                       data_dir=home / "data")
        net = LocalNetwork(settings, ChainSettings().geth_bin_dir, Ports.free(),
                           fast_keys=True)
        postgres = PostgresServer()
        try:
            net.init()
            net.start()
            net.wait_for_block(1, timeout=90)
            w3 = connect(net.rpc_url)
            operator = net.keys.role("operator").unlock()
            deployment = deploy_settlement(w3, operator, net.keys.role("bridge").address)
            record = home / "settlement.json"
            save_deployment(deployment, record)
            now = w3.eth.get_block("latest")["timestamp"]
            slots = -(-args.trades // args.participants)
            community = make_community(args.participants, args.trades, args.busy, rng,
                                       now // SLOT * SLOT - (slots + 1) * SLOT)
            wallet = Account.create()
            registered = register_everyone(net, deployment, community, wallet.address,
                                           8 * args.window)
            print(f"registered {registered} participants' wallets", flush=True)
            print(f"recording {args.trades} trades of {args.participants} participants",
                  flush=True)
            half = len(community.trades) // 2
            chain = put_on_chain(net, deployment, community.trades[:half], args.window)
            send_admin(net, deployment, "closePeriod", now // SLOT * SLOT)
            rest = put_on_chain(net, deployment, community.trades[half:], args.window)
            chain = {"trades": len(community.trades),
                     "transactions": chain["transactions"] + rest["transactions"],
                     "seconds": chain["seconds"] + rest["seconds"],
                     "trades_per_s": round(len(community.trades)
                                           / (chain["seconds"] + rest["seconds"]), 1),
                     "head": rest["head"]}
            baseline = []
            for _ in range(args.baseline):
                started = time.perf_counter()
                trades_from_logs(w3, deployment, community.busy, 50)
                baseline.append(time.perf_counter() - started)
            result: dict[str, Any] = {
                "config": {"participants": args.participants, "trades": args.trades,
                           "busy": args.busy, "requests": args.requests,
                           "gas_limit": args.gas_limit, "block_period_s": 1},
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version(),
                            "loadavg_before": load_before},
                "chain": chain, "baseline": summary(baseline)}
            wallets = {"participant": wallet, "operator": operator}
            result["sqlite"] = run_engine("sqlite", f"sqlite:///{home / 'portal.sqlite3'}",
                                          net, record, home, community, wallets,
                                          args.requests)
            postgres.start()
            result["postgresql"] = run_engine(
                "postgresql", postgres.create_database("portal"), net, record, home,
                community, wallets, args.requests)
            result["pdf_render"] = time_pdf_render(community, 10_000)
            result["machine"]["loadavg_after"] = os.getloadavg()
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "portal_load.json").write_text(json.dumps(result, indent=2))
            plots = [args.out / "portal_load.png"]
            if args.doc_plot:
                plots.append(PROJECT_ROOT / "docs" / "img" / "portal_load.png")
            plot(result, plots)
            print_report(result)
            print(f"\nwrote {args.out / 'portal_load.json'} and "
                  f"{', '.join(str(p) for p in plots)}")
        finally:
            postgres.stop()
            net.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
