"""The database question: the same trades through the same Redis stream into the chain (the
real bridge) and into PostgreSQL (the reference consumer), side by side in one run; and, with
``--storage``, the chain's bytes on disk per trade, per meter reading and per block.

    .venv/bin/python benchmarks/db_compare.py [--trades 10000]
    .venv/bin/python benchmarks/db_compare.py --storage [--trades 100000] [--meters 1000]
        [--readings 20]

**Compare** (default). The recordings of ``tests/data`` with fresh trade ids
(``bridge_throughput.make_events``), published at once as the plug-in writes them:

1. **PostgreSQL**: Debian's server (``runner.postgres``, default settings, ``fsync`` and
   ``synchronous_commit`` on), its own Redis, and ``benchmarks/pg_settlement.py`` as a process:
   exactly once by primary key, bills in the trade's transaction, acknowledged after commit.
   Durable = the commit returned.
2. **Chain**: ``bridge_throughput.bridge_stack`` (three signers and the archive RPC node,
   1 s blocks, the default gas limit, the bridge as a process with default settings). Durable
   = the trade's receipt with one block on top, seen at the RPC node.

For both: sustained trades/s over the burst (from the first durable batch to the last),
p50/p95 latency from stream entry to durable, CPU seconds per trade summed over every
process involved and its children (geth nodes + bridge; postgres and its backends +
consumer; each system's Redis reported apart), disk bytes per trade (the geth datadirs'
``geth/`` after a clean stop, so the validators' state trie is written out; PostgreSQL's
tables with indexes, its WAL and its whole data directory).

**Storage** (``--storage``). ``--meters`` meters registered, then, each phase ended by a
clean stop of every node and a measurement of each datadir (allocated bytes): an idle phase
(bytes per empty block), ``--trades`` trades (one per participant per slot, each between two
metered participants: ``metering_load.trade_events``) through the bridge, and ``--readings``
boundary readings per meter, signed like a meter's and sent in ``submitReadings`` batches.
Bytes per trade and per reading have the empty blocks of their phase taken out. Then the
projection for a year of a community (``--participants``, 15-minute slots).

Prints a table with ratios, writes ``db_compare.json``/``.png`` (or ``storage_growth.*``)
under ``--out`` (default ``benchmarks/results/``), stops every process it started, also on
failure. Other helpers may share the machine: the load average is recorded. Needs matplotlib.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import coincurve
import psycopg
import redis
from bridge_throughput import (
    SEED,
    BridgeStack,
    Watch,
    _base_env,
    _quantile,
    bridge_stack,
    make_events,
    publish,
    watch_chain,
)
from eth_account import Account
from hexbytes import HexBytes
from metering_load import Fleet, Signer, TreeCpuMeter, register, trade_events
from web3.logs import DISCARD

from bridge.config import BridgeSettings
from pilotchain.chain import Sender, connect, wait_for, wait_for_receipt
from pilotchain.config import ChainSettings
from pilotchain.contract import settlement_contract
from pilotchain.deployment import ensure_reader
from pilotchain.metering import DEFAULT_SLOT_SECONDS, ZERO_ANCHOR, Domain, MeterReading
from pilotchain.settings import PROJECT_ROOT
from runner.localnet import BOOTNODE, RPC_NODE, LocalNetwork
from runner.postgres import PostgresServer
from runner.redis import RedisService, private_connection

CONSUMER = PROJECT_ROOT / "benchmarks" / "pg_settlement.py"
CHAIN_STREAM = "bench:chain-trades"
PG_STREAM = "bench:pg-trades"
SLOT = DEFAULT_SLOT_SECONDS
SLOTS_PER_YEAR = 365 * 24 * 3600 // SLOT
READINGS_PER_BATCH = 150  # 150 x 90,000 worst-case gas: under half the default block
READING_GAS = 95_000


# --- measuring ------------------------------------------------------------------------------


def disk_bytes(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (what du counts)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass  # a file compacted away meanwhile
    return total


def geth_bytes(path: Path) -> int:
    """A stopped geth database's bytes: every file but pebble's write-ahead logs, of which
    only the newest counts (the data not yet in tables); older logs are kept for reuse
    (pebble recycles them), a file of up to a memtable's size that comes and goes."""
    logs: list[Path] = []
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            file = Path(root) / name
            if name.endswith(".log") and name[:-4].isdigit():
                logs.append(file)
            else:
                total += file.lstat().st_blocks * 512
    if logs:
        total += max(logs, key=lambda f: int(f.name[:-4])).stat().st_size
    return total


def chain_sizes(net: LocalNetwork) -> dict[str, int]:
    """Each node's database (``<datadir>/geth``: chaindata with its freezer, and the rest)."""
    return {name: geth_bytes(net.datadir(name) / "geth") for name in net.node_names()
            if name != BOOTNODE}


def compact(net: LocalNetwork) -> None:
    """``geth db compact`` on every stopped node: pebble's tables as a long-running node's
    settle, without the not-yet-compacted levels and tombstones that otherwise make one
    phase's growth look 20 MB larger and the next one's negative."""
    for name in net.node_names():
        if name == BOOTNODE:
            continue
        done = subprocess.run([str(net.bin_dir / "geth"), "--datadir", str(net.datadir(name)),
                               "--verbosity", "2", "db", "compact"],
                              capture_output=True, text=True, timeout=1800, check=False)
        if done.returncode != 0:
            raise SystemExit(f"geth db compact failed on {name}: {done.stderr[-2000:]}")


def stopped_sizes(net: LocalNetwork, *, restart: bool) -> dict[str, int]:
    """Stop every node cleanly (a full node writes its cached state trie on the way out),
    compact, measure, and start them again if asked."""
    unclean = net.stop()
    if unclean:
        raise SystemExit(f"{', '.join(unclean)} needed SIGKILL; the sizes would not be fair.")
    compact(net)
    sizes = chain_sizes(net)
    if restart:
        net.start()
        head = net.block_number()
        net.wait_for_block(head + 2, timeout=90)
    return sizes


def tree_cpu(pids: dict[str, int | None]) -> TreeCpuMeter:
    return TreeCpuMeter(pids)


def cpu_seconds(before: dict[str, float], after: dict[str, float], names: Sequence[str]
                ) -> dict[str, float]:
    return {name: round(after[name] - before[name], 3) for name in names}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def latency_figures(entered: Sequence[float], durable: Sequence[float]) -> dict[str, float]:
    """Throughput and latency from per-trade stream entry and durable times (seconds)."""
    latencies = sorted(d - e for e, d in zip(entered, durable, strict=True))
    done = sorted(durable)
    first_batch = sum(1 for t in done if t <= done[0] + 0.05)
    span = done[-1] - done[0]
    return {"trades": len(done),
            "seconds": round(done[-1] - min(entered), 2),
            "settled_per_s": round(len(done) / (done[-1] - min(entered)), 1),
            "sustained_per_s": round((len(done) - first_batch) / span, 1) if span else
            float("nan"),
            "latency_p50_s": round(_quantile(latencies, 0.50), 3),
            "latency_p95_s": round(_quantile(latencies, 0.95), 3),
            "latency_max_s": round(latencies[-1], 3)}


# --- PostgreSQL -----------------------------------------------------------------------------


@contextmanager
def postgres_consumer(home: Path) -> Iterator[tuple[PostgresServer, RedisService, str,
                                                     subprocess.Popen[bytes], Path]]:
    """PostgreSQL, its own Redis and the reference consumer; all stopped on leaving."""
    server = PostgresServer()
    store = RedisService(private_connection(), home / "pg-redis", home / "pids")
    process: subprocess.Popen[bytes] | None = None
    timings = home / "pg-timings.jsonl"
    try:
        server.start()
        store.start()
        database = server.create_database("settlement")
        with (home / "pg-consumer.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, str(CONSUMER), "--redis-url", store.url, "--postgres-url",
                 database, "--stream", PG_STREAM, "--timings", str(timings)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env=_base_env())
        wait_for(lambda: _has_tables(database) or process.poll() is not None, timeout=30,
                 what="the reference consumer to create its tables")
        if process.poll() is not None:
            raise SystemExit("The reference consumer exited: "
                             + (home / "pg-consumer.log").read_text()[-2000:])
        yield server, store, database, process, timings
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        store.stop()
        server.stop()


def _has_tables(database: str) -> bool:
    with psycopg.connect(database) as conn:
        return conn.execute("SELECT to_regclass('bills') IS NOT NULL").fetchone() == (True,)


def _pg_sizes(database: str) -> dict[str, int]:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CHECKPOINT")  # superuser (initdb's): data files written, WAL flushed
        row = conn.execute(
            "SELECT pg_total_relation_size('trades') + pg_total_relation_size('bills'),"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()
    assert row is not None
    return {"tables_and_indexes": int(row[0]), "wal_position": int(row[1])}


def run_postgres(home: Path, events: list[dict[str, Any]], timeout: float) -> dict[str, Any]:
    """The burst into PostgreSQL through the reference consumer."""
    print(f"postgresql: publishing {len(events)} trades at once", file=sys.stderr)
    with postgres_consumer(home) as (server, store, database, process, timings):
        client = redis.Redis.from_url(store.url)
        size_before = {**_pg_sizes(database), "data_dir": disk_bytes(server.data_dir)}
        cpu = tree_cpu({"postgres": server.process.pid if server.process else None,
                        "consumer": process.pid, "redis": store.process.pid})
        before = cpu.sample()
        load = load_average()
        entered = publish(client, events, None, stream=PG_STREAM)
        wait_for(lambda: len(_read_timings(timings)) >= len(entered), timeout=timeout,
                 interval=0.2, what=f"PostgreSQL to commit {len(entered)} trades")
        after = cpu.sample()
        size_after = {**_pg_sizes(database), "data_dir": disk_bytes(server.data_dir)}
        with psycopg.connect(database) as conn:
            row = conn.execute("SELECT count(*) FROM trades").fetchone()
        if row is None or row[0] != len({e["trade"]["id"] for e in events}):
            raise SystemExit(f"PostgreSQL holds {row} trades, not {len(events)}.")
        pairs = _read_timings(timings)
        used = cpu_seconds(before, after, ["postgres", "consumer", "redis"])
        n = len(events)
        return {
            **latency_figures([e for e, _ in pairs], [c for _, c in pairs]),
            "cpu_s": used,
            "cpu_s_per_trade": round((used["postgres"] + used["consumer"]) / n, 6),
            "bytes_per_trade": {
                "tables_and_indexes": round((size_after["tables_and_indexes"]
                                             - size_before["tables_and_indexes"]) / n),
                "wal_written": round((size_after["wal_position"]
                                      - size_before["wal_position"]) / n),
                "data_dir": round((size_after["data_dir"] - size_before["data_dir"]) / n)},
            "load_average_at_start": load,
        }


def _read_timings(path: Path) -> list[tuple[float, float]]:
    """(stream entry time, commit time) in seconds of every entry the consumer committed."""
    if not path.is_file():
        return []
    pairs = []
    for line in path.read_text().splitlines():
        batch = json.loads(line)
        pairs += [(ms / 1000, batch["committed"]) for ms in batch["entered_ms"]]
    return pairs


# --- the chain ------------------------------------------------------------------------------


@contextmanager
def watching(stack: BridgeStack) -> Iterator[Watch]:
    """A thread noting every block and settled trade at the RPC node (bridge_throughput's)."""
    watch = Watch()
    thread = threading.Thread(target=watch_chain, daemon=True, args=(
        connect(stack.net.rpc_url), stack.deployment.address, watch,
        f"{stack.settings.metrics_url}/status"))
    thread.start()
    try:
        yield watch
    finally:
        watch.stop.set()
        thread.join(timeout=10)


def chain_cpu(stack: BridgeStack) -> TreeCpuMeter:
    pids: dict[str, int | None] = {name: stack.net.process(name).pid
                                   for name in stack.net.node_names()}
    return tree_cpu({**pids, "bridge": stack.service.process.pid,
                     "redis": stack.store.process.pid})


def confirmed_at(watch: Watch, settled: float) -> float | None:
    """When the block after the one seen at ``settled`` was seen (one confirmation)."""
    later = [b["seen"] for b in list(watch.blocks) if b["seen"] > settled + 1e-6]
    return min(later) if later else None


def settle_on_chain(client: redis.Redis, watch: Watch, events: list[dict[str, Any]],
                    timeout: float, stream: str = CHAIN_STREAM
                    ) -> tuple[dict[uuid.UUID, float], dict[uuid.UUID, float]]:
    """Publish at once; wait for each trade's receipt and one block on top. Entry and
    durable times by trade id."""
    ids = [uuid.UUID(e["trade"]["id"]) for e in events]
    entered = publish(client, events, None, stream=stream)
    wait_for(lambda: all(i in watch.settled_at for i in ids), timeout=timeout, interval=0.5,
             what=f"{len(ids)} trades on chain")
    last = max(watch.settled_at[i] for i in ids)
    wait_for(lambda: confirmed_at(watch, last) is not None, timeout=30,
             what="one block on top of the last trade's")
    confirmations: dict[float, float] = {}
    durable = {}
    for i in ids:
        seen = watch.settled_at[i]
        if seen not in confirmations:
            confirmations[seen] = confirmed_at(watch, seen) or seen
        durable[i] = confirmations[seen]
    return entered, durable


def run_chain(stack: BridgeStack, events: list[dict[str, Any]], timeout: float
              ) -> dict[str, Any]:
    """The burst into the chain through the bridge."""
    print(f"chain: publishing {len(events)} trades at once", file=sys.stderr)
    client = redis.Redis.from_url(stack.store.url)
    sizes_before = stopped_sizes(stack.net, restart=True)
    with watching(stack) as watch:
        cpu = chain_cpu(stack)
        before = cpu.sample()
        load = load_average()
        entered, durable = settle_on_chain(client, watch, events, timeout)
        after = cpu.sample()
        first_block = min(b["number"] for b in watch.blocks)
        last_block = max(b["number"] for b in watch.blocks)
    sizes_after = stopped_sizes(stack.net, restart=False)
    ids = list(entered)
    names = [*(n for n in stack.net.node_names()), "bridge", "redis"]
    used = cpu_seconds(before, after, names)
    n = len(events)
    validators = [name for name in sizes_after if name != RPC_NODE]
    grown = {name: sizes_after[name] - sizes_before[name] for name in sizes_after}
    return {
        **latency_figures([entered[i] for i in ids], [durable[i] for i in ids]),
        "cpu_s": used,
        "cpu_s_per_trade": round(sum(v for k, v in used.items() if k != "redis") / n, 6),
        "bytes_per_trade": {
            "validator": round(sum(grown[v] for v in validators) / len(validators) / n),
            "archive_rpc_node": round(grown[RPC_NODE] / n),
            "all_nodes": round(sum(grown.values()) / n)},
        "blocks": last_block - first_block + 1,
        "load_average_at_start": load,
    }


def compare(args: argparse.Namespace) -> dict[str, Any]:
    events = make_events(args.trades, random.Random(SEED))
    timeout = 120 + args.trades / 50
    with tempfile.TemporaryDirectory(prefix="db-compare-") as tmp:
        home = Path(tmp)
        result: dict[str, Any] = {"trades": args.trades, "cores": os.cpu_count(),
                                  "load_average_before": load_average()}
        result["postgresql"] = run_postgres(home, events, timeout)
        with bridge_stack(home / "chain", ChainSettings().gas_limit,
                          BridgeSettings().gas_budget, stream=CHAIN_STREAM,
                          log_copy=args.out / "db_compare.bridge.log") as stack:
            result["chain"] = run_chain(stack, events, timeout)
    result["ratios"] = ratios(result["chain"], result["postgresql"])
    result["load_average_after"] = load_average()
    return result


def ratios(chain: dict[str, Any], pg: dict[str, Any]) -> dict[str, float]:
    """Chain / PostgreSQL for each figure (above 1: the chain needs more, or is slower)."""
    return {
        "sustained_per_s": round(chain["sustained_per_s"] / pg["sustained_per_s"], 4),
        "latency_p95_s": round(chain["latency_p95_s"] / pg["latency_p95_s"], 1),
        "cpu_s_per_trade": round(chain["cpu_s_per_trade"] / pg["cpu_s_per_trade"], 1),
        "bytes_per_trade_all_nodes_vs_tables": round(
            chain["bytes_per_trade"]["all_nodes"] / pg["bytes_per_trade"]["tables_and_indexes"],
            1),
        "bytes_per_trade_archive_vs_data_dir": round(
            chain["bytes_per_trade"]["archive_rpc_node"] / pg["bytes_per_trade"]["data_dir"], 1),
    }


def print_compare(result: dict[str, Any]) -> None:
    chain, pg = result["chain"], result["postgresql"]
    r = result["ratios"]
    print(f"\nThe database question: {result['trades']:,} recorded trades, one burst, "
          f"{result['cores']} cores, load average before {result['load_average_before']}")
    print(f"{'':<38}{'chain':>14}{'PostgreSQL':>14}{'chain/PG':>10}")
    rows = [
        ("sustained trades/s", chain["sustained_per_s"], pg["sustained_per_s"],
         r["sustained_per_s"]),
        ("p50 latency entry -> durable (s)", chain["latency_p50_s"], pg["latency_p50_s"],
         round(chain["latency_p50_s"] / pg["latency_p50_s"], 1)),
        ("p95 latency entry -> durable (s)", chain["latency_p95_s"], pg["latency_p95_s"],
         r["latency_p95_s"]),
        ("CPU ms per trade", round(1000 * chain["cpu_s_per_trade"], 3),
         round(1000 * pg["cpu_s_per_trade"], 3), r["cpu_s_per_trade"]),
        ("disk bytes/trade (all nodes | tables)", chain["bytes_per_trade"]["all_nodes"],
         pg["bytes_per_trade"]["tables_and_indexes"],
         r["bytes_per_trade_all_nodes_vs_tables"]),
        ("disk bytes/trade (archive | data dir)", chain["bytes_per_trade"]["archive_rpc_node"],
         pg["bytes_per_trade"]["data_dir"], r["bytes_per_trade_archive_vs_data_dir"]),
        ("disk bytes/trade (validator | WAL)", chain["bytes_per_trade"]["validator"],
         pg["bytes_per_trade"]["wal_written"], "-"),
    ]
    for name, a, b, ratio in rows:
        print(f"{name:<38}{a:>14}{b:>14}{ratio:>10}")
    print(f"CPU seconds chain: {chain['cpu_s']}")
    print(f"CPU seconds PostgreSQL: {pg['cpu_s']}")


def plot_compare(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chain, pg = result["chain"], result["postgresql"]
    figures = [
        ("sustained trades/s", chain["sustained_per_s"], pg["sustained_per_s"]),
        ("p95 latency to durable (s)", chain["latency_p95_s"], pg["latency_p95_s"]),
        ("CPU ms per trade", 1000 * chain["cpu_s_per_trade"], 1000 * pg["cpu_s_per_trade"]),
        ("disk bytes per trade\n(all 4 nodes | tables + WAL)",
         chain["bytes_per_trade"]["all_nodes"],
         pg["bytes_per_trade"]["tables_and_indexes"] + pg["bytes_per_trade"]["wal_written"]),
    ]
    fig, axes = plt.subplots(1, len(figures), figsize=(15, 4))
    for ax, (title, a, b) in zip(axes, figures, strict=True):
        bars = ax.bar(["chain", "PostgreSQL"], [a, b], color=["tab:blue", "tab:green"])
        ax.bar_label(bars, fmt="%.3g")
        ax.set_yscale("log")
        ax.set_title(title)
    fig.suptitle(f"{result['trades']:,} recorded trades in one burst, same Redis stream "
                 f"(chain / PostgreSQL; log scale)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# --- storage growth -------------------------------------------------------------------------


def submit_readings(stack: BridgeStack, fleet: Fleet, times: Sequence[int]) -> int:
    """Every meter's boundary reading at each of ``times`` (registers rising), signed by the
    meter's key, in submitReadings batches from the ingest's account; returns how many were
    recorded (each batch's ReadingsSubmitted)."""
    w3, deployment = stack.w3, stack.deployment
    operator = stack.net.keys.role("operator").unlock()
    reader = stack.net.keys.role("ingest").unlock()
    ensure_reader(w3, operator, deployment, reader.address)
    contract = settlement_contract(w3, deployment)
    signer = Signer(Domain(deployment.chain_id, deployment.address))
    keys = [coincurve.PrivateKey(raw) for raw in fleet.keys]
    sender = Sender(w3, reader, url=stack.net.rpc_url)
    readings = [signer.sign(MeterReading(meter, t, 1_000_000 + 250 * step + index % 7,
                                         50_000 + 120 * step, ZERO_ANCHOR), keys[index])
                for step, t in enumerate(times)
                for index, meter in enumerate(fleet.meters)]
    event = contract.events.ReadingsSubmitted()
    hashes: list[HexBytes] = []
    recorded = 0
    for start in range(0, len(readings), READINGS_PER_BATCH):
        batch = readings[start:start + READINGS_PER_BATCH]
        data = contract.encode_abi("submitReadings",
                                   args=[[r.as_contract_tuple() for r in batch]])
        hashes.append(sender.send({"to": contract.address, "data": HexBytes(data),
                                   "gas": READING_GAS * len(batch)}))
        while len(hashes) > 8:
            recorded += _recorded(w3, event, hashes.pop(0))
    for tx_hash in hashes:
        recorded += _recorded(w3, event, tx_hash)
    return recorded


def _recorded(w3: Any, event: Any, tx_hash: HexBytes) -> int:
    receipt = wait_for_receipt(w3, tx_hash, timeout=120)
    if receipt["status"] != 1:
        raise SystemExit(f"submitReadings {tx_hash.hex()} reverted.")
    return int(sum(log["args"]["recorded"]
                   for log in event.process_receipt(receipt, errors=DISCARD)))


def recording_rate() -> dict[str, Any]:
    """Trades per participant per slot in the recordings: trades over (devices that trade x
    slots with trades), devices being the origins of sellers and buyers."""
    rates = []
    for path in sorted((PROJECT_ROOT / "tests" / "data").glob("*.jsonl")):
        events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        devices = {e["trade"][role]["origin_uuid"] or e["trade"][role]["uuid"]
                   for e in events for role in ("seller", "buyer")}
        slots = {e["trade"]["time_slot"] for e in events}
        rates.append(len(events) / (len(devices) * len(slots)))
    return {"per_recording": [round(r, 3) for r in rates],
            "mean": round(sum(rates) / len(rates), 3)}


def storage(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(SEED)
    fleet = Fleet.make(args.meters, rng)
    slots = -(-args.trades // args.meters)
    with tempfile.TemporaryDirectory(prefix="storage-growth-") as tmp:
        home = Path(tmp)
        with bridge_stack(home, ChainSettings().gas_limit, BridgeSettings().gas_budget,
                          stream=CHAIN_STREAM,
                          log_copy=args.out / "storage_growth.bridge.log") as stack:
            net, w3 = stack.net, stack.w3
            result: dict[str, Any] = {"cores": os.cpu_count(), "meters": args.meters,
                                      "load_average_before": load_average()}
            print(f"storage: registering {args.meters} meters", file=sys.stderr)
            contract = settlement_contract(w3, stack.deployment)
            result["registration"] = register(
                w3, net.rpc_url, net.keys.role("operator").unlock(), contract, fleet,
                [Account.from_key(k).address for k in fleet.keys])
            phases: dict[str, dict[str, Any]] = {}
            sizes = stopped_sizes(net, restart=True)
            head = net.block_number()

            def phase(name: str, items: int) -> None:
                nonlocal sizes, head
                after = stopped_sizes(net, restart=True)
                new_head = net.block_number()
                phases[name] = {"items": items, "blocks": new_head - head,
                                "grown": {k: after[k] - sizes[k] for k in after}}
                print(f"storage: {name}: {phases[name]}", file=sys.stderr)
                sizes, head = after, new_head

            print(f"storage: idle for {args.idle_blocks} blocks", file=sys.stderr)
            net.wait_for_block(head + args.idle_blocks, timeout=args.idle_blocks * 3 + 30)
            phase("idle", 0)
            first_slot = (int(time.time()) // SLOT - slots - len(range(args.readings)) - 2) * SLOT
            events = [event for k in range(slots)
                      for event in trade_events(fleet, first_slot + k * SLOT, rng)][:args.trades]
            print(f"storage: {len(events)} trades of {args.meters} metered participants in "
                  f"{slots} slots", file=sys.stderr)
            client = redis.Redis.from_url(stack.store.url)
            with watching(stack) as watch:
                settle_on_chain(client, watch, events, timeout=300 + len(events) / 50)
            phase("trades", len(events))
            print(f"storage: {args.readings} boundary readings per meter", file=sys.stderr)
            recorded = submit_readings(stack, fleet, [first_slot + k * SLOT
                                                      for k in range(1, args.readings + 1)])
            if recorded != args.meters * args.readings:
                raise SystemExit(f"{recorded} readings recorded, not "
                                 f"{args.meters * args.readings}.")
            phase("readings", recorded)
            result["final_sizes"] = sizes
            result["head_block"] = head
    result["phases"] = phases
    result["per_item"] = per_item(phases)
    result["recordings"] = recording_rate()
    result["projection"] = project(result["per_item"], args.participants,
                                   result["recordings"]["mean"], args.block_period)
    result["load_average_after"] = load_average()
    return result


def per_item(phases: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Bytes per empty block, and per trade and reading net of their phase's blocks, for a
    validator (the mean of the signers) and the archive RPC node.

    An empty block changes no state, so it costs an archive what it costs a validator (its
    header, body and hash mappings); that is measured on the three validators, whose idle
    growth is steady, and used for both: the archive's own idle growth (tens of kB over a
    minute) drowns in the few MB by which its state snapshot's journal, written at each
    clean stop, differs from one stop to the next."""
    def grown(name: str, kind: str) -> float:
        g = phases[name]["grown"]
        if kind == "archive":
            return float(g[RPC_NODE])
        signers = [v for k, v in g.items() if k != RPC_NODE]
        return float(sum(signers)) / len(signers)

    per_block = grown("idle", "validator") / phases["idle"]["blocks"]
    out: dict[str, dict[str, float]] = {}
    for kind in ("validator", "archive"):
        out[kind] = {"per_empty_block": round(per_block)}
        for name, label in (("trades", "per_trade"), ("readings", "per_reading")):
            p = phases[name]
            out[kind][label] = round((grown(name, kind) - per_block * p["blocks"]) / p["items"])
            out[kind][f"{label}_raw"] = round(grown(name, kind) / p["items"])
    return out


def project(per: dict[str, dict[str, float]], participants: int, trades_per_slot: float,
            block_period: float) -> dict[str, Any]:
    """One year: ``participants`` x ``trades_per_slot`` trades and one boundary reading per
    participant per 15-minute slot, blocks every ``block_period`` seconds."""
    trades = participants * trades_per_slot * SLOTS_PER_YEAR
    readings = participants * SLOTS_PER_YEAR
    blocks = 365 * 24 * 3600 / block_period
    out: dict[str, Any] = {"participants": participants, "trades_per_participant_slot":
                           trades_per_slot, "trades": round(trades), "readings": readings,
                           "blocks": round(blocks), "block_period_s": block_period}
    for kind, figures in per.items():
        parts = {"trades": trades * figures["per_trade"],
                 "readings": readings * figures["per_reading"],
                 "empty_blocks": blocks * figures["per_empty_block"]}
        out[kind] = {**{k: round(v / 1e9, 1) for k, v in parts.items()},
                     "total_gb": round(sum(parts.values()) / 1e9, 1)}
    return out


def print_storage(result: dict[str, Any]) -> None:
    print(f"\nStorage growth ({result['meters']} metered participants; load average before "
          f"{result['load_average_before']})")
    for name, p in result["phases"].items():
        print(f"  {name}: {p['items']} items over {p['blocks']} blocks, grown "
              f"{ {k: round(v / 1e6, 2) for k, v in p['grown'].items()} } MB")
    print(f"{'bytes':<28}{'validator':>12}{'archive':>12}")
    for key in ("per_trade", "per_trade_raw", "per_reading", "per_reading_raw",
                "per_empty_block"):
        print(f"{key:<28}{result['per_item']['validator'][key]:>12}"
              f"{result['per_item']['archive'][key]:>12}")
    p = result["projection"]
    print(f"one year, {p['participants']:,} participants, {p['trades_per_participant_slot']} "
          f"trades per participant per slot ({p['trades']:,} trades, {p['readings']:,} "
          f"readings, {p['blocks']:,} blocks of {p['block_period_s']} s):")
    for kind in ("validator", "archive"):
        print(f"  {kind}: {p[kind]}")


def plot_storage(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = result["projection"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    kinds = ("validator", "archive")
    for offset, key in enumerate(("per_trade", "per_reading", "per_empty_block")):
        values = [result["per_item"][k][key] for k in kinds]
        bars = ax.bar([i + offset * 0.27 for i in range(2)], values, width=0.27, label=key)
        ax.bar_label(bars, fmt="%d")
    ax.set_xticks([0.27, 1.27], kinds)
    ax.set(ylabel="bytes on disk", title="Measured bytes per item")
    ax.legend()
    ax = axes[1]
    bottom = [0.0, 0.0]
    for part in ("trades", "readings", "empty_blocks"):
        values = [p[k][part] for k in kinds]
        ax.bar(kinds, values, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for i, total in enumerate(bottom):
        ax.text(i, total, f"{total:.0f} GB", ha="center", va="bottom")
    ax.set(ylabel="GB per year", title=f"One year, {p['participants']:,} participants, "
                                       f"15-min slots, {p['block_period_s']:.0f} s blocks")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# --- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", action="store_true",
                        help="measure storage growth instead of comparing with PostgreSQL")
    parser.add_argument("--trades", type=int, default=None,
                        help="trades in the burst (default 10,000; --storage: 100,000)")
    parser.add_argument("--meters", type=int, default=1000, help="--storage: participants")
    parser.add_argument("--readings", type=int, default=20,
                        help="--storage: boundary readings per meter")
    parser.add_argument("--idle-blocks", type=int, default=60,
                        help="--storage: blocks of the idle phase")
    parser.add_argument("--participants", type=int, default=10_000,
                        help="--storage: the community the year is projected for")
    parser.add_argument("--block-period", type=float, default=float(
        ChainSettings().block_period), help="--storage: block period of the projection")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "storage_growth" if args.storage else "db_compare"
    started = datetime.now(UTC).isoformat(timespec="seconds")
    if args.storage:
        args.trades = args.trades or 100_000
        result = storage(args)
        print_storage(result)
        plot_storage(result, args.out / f"{name}.png")
    else:
        args.trades = args.trades or 10_000
        result = compare(args)
        print_compare(result)
        plot_compare(result, args.out / f"{name}.png")
    result["started"] = started
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out / f'{name}.json'} and {args.out / f'{name}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
