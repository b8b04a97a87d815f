"""Claims per second of the faucet under load: real gunicorn (4 workers), a real local
three-signer Clique network (1 s blocks) and a real Redis, all on loopback.

    .venv/bin/python benchmarks/faucet_claims.py [--claims 200] [--serial 40] [--workers 4]
                                                 [--threads 4]

It measures, in one run on one machine:

- **serial**: claims sent one after the other (one client, one connection at a time): the
  latency-bound rate, the baseline;
- **concurrent**: ``--claims`` claims for as many distinct addresses fired at the same
  moment, each from its own client IP (X-Forwarded-For, one trusted proxy).

and prints both rates and their ratio (machines here are noisy, so the ratio is the number
to compare between runs), the CPU time the faucet (gunicorn) and the chain (geth) spent per
concurrent claim, which depends little on what else the machine runs, with the rate the
machine's cores could reach at that cost, and the load average. Then it checks the outcome:
every claim answered 200, every address funded exactly once, the pool drained (txpool_status
pending and queued 0). The client is a few lines of asyncio writing raw HTTP, so it takes
little CPU from the server it measures.
Everything is started in a temporary directory on free ports and stopped at the end; the
whole run is bounded by ``--deadline`` seconds. The target is 50 claims/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account

from faucet.config import FaucetSettings
from pilotchain.chain import connect, wait_for
from pilotchain.config import ChainSettings
from pilotchain.errors import PilotChainError
from runner.faucet import FaucetService
from runner.localnet import LocalNetwork
from runner.ports import Ports, free_port
from runner.redis import RedisService, private_connection

GETH_BIN_DIR = Path(
    os.environ.get("GETH_BIN_DIR", Path.home() / ".cache/pilotchain/geth-v1.13.15/bin")
)
TARGET_PER_SECOND = 50
UNIT = 10**18


@dataclass(frozen=True)
class Answer:
    """One claim's HTTP status, latency and JSON body."""

    status: int
    seconds: float
    body: dict


@dataclass(frozen=True)
class Stack:
    """The running network and faucet."""

    net: LocalNetwork
    faucet: FaucetService


@contextmanager
def running_stack(home: Path, workers: int, threads: int) -> Iterator[Stack]:
    """A network, Redis and the faucet under ``home``; every process stopped afterwards."""
    settings = ChainSettings(block_period=1, keys_dir=home / "keys",
                             genesis_file=home / "genesis.json", data_dir=home / "data",
                             geth_bin_dir=GETH_BIN_DIR)
    net = LocalNetwork(settings, GETH_BIN_DIR, Ports.free(), fast_keys=True)
    redis_service = RedisService(private_connection(), home / "redis", home / "redis-pids")
    faucet: FaucetService | None = None
    try:
        net.init()
        net.start()
        net.wait_for_block(1, timeout=90)
        redis_service.start()
        role = net.keys.role("faucet")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PILOTCHAIN_HOME": str(home),
            "RPC_URL": net.rpc_url, "CHAIN_ID": str(settings.chain_id),
            "REDIS_URL": redis_service.url, "FAUCET_KEYSTORE": str(role.keystore),
            "FAUCET_PASSWORD_FILE": str(role.password_file), "FAUCET_PORT": str(free_port()),
            "FAUCET_METRICS_PORT": str(free_port()),
            "FAUCET_WORKERS": str(workers), "FAUCET_THREADS": str(threads),
            "FAUCET_TRUSTED_PROXIES": "1", "FAUCET_LOCK_FILE": str(home / "faucet-send.lock"),
        }
        faucet = FaucetService(FaucetSettings.from_env(env), home / "pids", env)
        faucet.start()
        yield Stack(net, faucet)
    finally:
        if faucet is not None:
            faucet.stop()
        redis_service.stop()
        net.stop()


async def claim(port: int, address: str, client_ip: str) -> Answer:
    """One ``POST /api/claim`` over its own connection, as raw HTTP/1.1."""
    body = json.dumps({"address": address}).encode()
    head = (f"POST /api/claim HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"X-Forwarded-For: {client_ip}\r\nConnection: close\r\n\r\n")
    began = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=60)
    finally:
        writer.close()
        await writer.wait_closed()
    seconds = time.perf_counter() - began
    headers, _, payload = raw.partition(b"\r\n\r\n")
    status = int(headers.split(b" ", 2)[1])
    return Answer(status, seconds, json.loads(payload))


async def serial(port: int, addresses: list[str]) -> list[Answer]:
    """Claims one after the other, each from its own IP."""
    return [await claim(port, address, f"10.1.{i // 250}.{i % 250 + 1}")
            for i, address in enumerate(addresses)]


async def concurrent(port: int, addresses: list[str]) -> list[Answer]:
    """All claims at once, each over its own connection from its own IP."""
    return list(await asyncio.gather(*(claim(port, address, f"10.2.{i // 250}.{i % 250 + 1}")
                                       for i, address in enumerate(addresses))))


def timed(run: Coroutine[Any, Any, list[Answer]]) -> tuple[list[Answer], float]:
    """Run the coroutine ``run``; its answers and how long it took."""
    began = time.perf_counter()
    answers = asyncio.run(run)
    return answers, time.perf_counter() - began


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of ``pids`` so far (from /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """``pid``'s direct children (gunicorn's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    return found


def process_groups(stack: Stack) -> dict[str, list[int]]:
    """The pids whose CPU time is measured: gunicorn (master and workers) and geth."""
    master = stack.faucet.process.pid or 0
    geth = [stack.net.process(name).pid or 0 for name in stack.net.node_names()]
    return {"faucet": [master, *children(master)], "chain": geth}


def check_outcome(stack: Stack, addresses: list[str], answers: list[Answer]) -> list[str]:
    """What went wrong: non-200 answers, duplicate hashes, a pool that does not drain,
    addresses not holding exactly one claim."""
    problems = [f"{a.status}: {a.body.get('error')}" for a in answers if a.status != 200][:5]
    hashes = {a.body.get("tx_hash") for a in answers if a.status == 200}
    if len(hashes) != sum(a.status == 200 for a in answers):
        problems.append("two claims answered with the same transaction hash")
    w3 = connect(stack.net.rpc_url)

    def drained() -> bool:
        status = w3.manager.request_blocking("txpool_status", [])
        return int(status["pending"], 16) == 0 and int(status["queued"], 16) == 0

    wait_for(drained, timeout=120, what="the transaction pool to drain")
    wrong = [a for a in addresses if w3.eth.get_balance(a) != UNIT]
    if wrong:
        problems.append(f"{len(wrong)} addresses do not hold exactly one claim")
    return problems


def describe(name: str, answers: list[Answer], seconds: float) -> str:
    """One row of the result table."""
    latencies = sorted(a.seconds for a in answers)
    p95 = latencies[max(0, int(len(latencies) * 0.95) - 1)]
    return (f"{name:<11} {len(answers):>6} {seconds:>8.2f} {len(answers) / seconds:>10.1f} "
            f"{statistics.median(latencies) * 1000:>9.0f} {p95 * 1000:>9.0f}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 if the outcome was right (the rate is reported, not judged)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=200, help="concurrent claims (200)")
    parser.add_argument("--serial", type=int, default=40, help="serial baseline claims (40)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (4)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (4)")
    parser.add_argument("--deadline", type=float, default=600, help="give up after (s)")
    args = parser.parse_args(argv)
    if not (GETH_BIN_DIR / "geth").is_file():
        print(f"geth 1.13.15 is not in {GETH_BIN_DIR}; run ./scripts/test once to build it.")
        return 2
    home = Path(tempfile.mkdtemp(prefix="faucet-bench-"))
    began = time.monotonic()
    try:
        with running_stack(home, args.workers, args.threads) as stack:
            port = stack.faucet.settings.port
            warm = [Account.create().address for _ in range(2 * args.workers)]
            asyncio.run(serial(port, warm))  # every worker has read the chain id and fees
            serial_addresses = [Account.create().address for _ in range(args.serial)]
            serial_answers, serial_seconds = timed(serial(port, serial_addresses))
            load_addresses = [Account.create().address for _ in range(args.claims)]
            groups = process_groups(stack)
            cpu_before = {name: cpu_seconds(pids) for name, pids in groups.items()}
            load_answers, load_seconds = timed(concurrent(port, load_addresses))
            cpu_ms = {name: (cpu_seconds(pids) - cpu_before[name]) * 1000 / args.claims
                      for name, pids in groups.items()}
            load_average = os.getloadavg()[0]
            problems = check_outcome(stack, serial_addresses + load_addresses,
                                     serial_answers + load_answers)
            if time.monotonic() - began > args.deadline:
                problems.append(f"the run took longer than {args.deadline:.0f} s")
    except PilotChainError as error:
        print(f"faucet_claims: {error}")
        return 2
    finally:
        shutil.rmtree(home, ignore_errors=True)
    serial_rate = len(serial_answers) / serial_seconds
    load_rate = len(load_answers) / load_seconds
    print(f"faucet claims: gunicorn {args.workers} workers x {args.threads} threads, "
          f"3-signer Clique, 1 s blocks, {os.cpu_count()} CPUs")
    print(f"{'run':<11} {'claims':>6} {'seconds':>8} {'claims/s':>10} {'p50 ms':>9} "
          f"{'p95 ms':>9}")
    print(describe("serial", serial_answers, serial_seconds))
    print(describe("concurrent", load_answers, load_seconds))
    print(f"concurrent / serial: {load_rate / serial_rate:.2f}x; target "
          f"{TARGET_PER_SECOND} claims/s: {'met' if load_rate >= TARGET_PER_SECOND else 'MISSED'}")
    per_claim = cpu_ms["faucet"] + cpu_ms["chain"]
    cores = os.cpu_count() or 1
    print(f"CPU per concurrent claim: faucet {cpu_ms['faucet']:.1f} ms, chain (all geth) "
          f"{cpu_ms['chain']:.1f} ms; {cores} idle cores would allow about "
          f"{cores * 1000 / per_claim:.0f} claims/s; load average during the run "
          f"{load_average:.1f}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("outcome: every claim answered 200, each address funded exactly once, pool drained"
          if not problems else "outcome: FAILED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
