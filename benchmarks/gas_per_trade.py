"""Gas per trade of ``Settlement.recordTrades`` for batches of 1, 10, 100 and the largest
batch that fits under geth's 128 KiB transaction size limit.

Runs on an in-process London EVM (eth-tester) by default::

    .venv/bin/python benchmarks/gas_per_trade.py

With ``--chain`` it starts a real three-signer Clique network of geth 1.13.15 processes
(the project's native runner, temporary directory, free ports, 1 s blocks) and measures
there; everything else signs and sends raw transactions like a real client either way::

    .venv/bin/python benchmarks/gas_per_trade.py --chain

Trades are the recorded gsy-e trades of ``tests/data`` with fresh trade ids, so ids, amounts
and participants look like production. "steady" rows are measured after every participant
already has a bill (the normal case); the "cold" row is the first batch on a new contract,
where each new participant's bill slots are created (22.1k gas per new slot).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from pilotchain.chain import current_fees
from pilotchain.contract import (
    MAX_TRANSACTION_BYTES,
    compile_settlement,
    deploy_settlement,
    settlement_contract,
)
from pilotchain.settlement import SettlementABI
from pilotchain.trades import TradeRecord, read_recording
from worker.gas import calldata_gas

DATA_DIR = Path(__file__).resolve().parent.parent / "tests" / "data"
BATCH_SIZES = (1, 10, 100)
GAS_TARGET_PER_TRADE = 40_000
SEED = 1


@dataclass(frozen=True)
class Bench:
    """A chain to measure on: web3, the operator (deploys) and the recorder (records)."""

    w3: Web3
    operator: LocalAccount
    recorder: LocalAccount


def connect() -> Bench:
    """An eth-tester London chain with a funded operator and recorder."""
    from eth.vm.forks import LondonVM  # test-only dependencies, imported where used
    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import EthereumTesterProvider

    # The pilot chain's genesis gas limit (config.ChainSettings.gas_limit).
    genesis = PyEVMBackend.generate_genesis_params({"gas_limit": 60_000_000})
    backend = PyEVMBackend(genesis_parameters=genesis, vm_configuration=((0, LondonVM),))
    w3 = Web3(EthereumTesterProvider(EthereumTester(backend)))
    rng = random.Random(SEED)
    operator = Account.from_key(rng.randbytes(32))
    recorder = Account.from_key(rng.randbytes(32))
    for account in (operator, recorder):
        w3.eth.send_transaction(
            {"from": w3.eth.accounts[0], "to": account.address, "value": 10**21}
        )
    return Bench(w3, operator, recorder)


@contextmanager
def local_chain() -> Iterator[Bench]:
    """A real local Clique network with the operator and bridge keys it generated."""
    from pilotchain.chain import connect as connect_rpc
    from pilotchain.config import ChainSettings
    from runner.localnet import LocalNetwork
    from runner.ports import Ports

    with tempfile.TemporaryDirectory(prefix="gas-bench-") as tmp:
        home = Path(tmp)
        settings = ChainSettings(block_period=1, keys_dir=home / "keys",
                                 genesis_file=home / "genesis.json", data_dir=home / "data")
        net = LocalNetwork(settings, settings.geth_bin_dir, Ports.free(), fast_keys=True)
        try:
            net.init()
            net.start()
            net.wait_for_block(1, timeout=90)
            yield Bench(connect_rpc(net.rpc_url), net.keys.role("operator").unlock(),
                        net.keys.role("bridge").unlock())
        finally:
            net.stop()


def sample_trades(pool: Sequence[TradeRecord], count: int, rng: random.Random) -> list[TradeRecord]:
    """``count`` recorded trades drawn at random, each with a fresh trade id."""
    return [
        dataclasses.replace(rng.choice(pool), trade_id=uuid.UUID(int=rng.getrandbits(128)))
        for _ in range(count)
    ]


def build_transaction(
    bench: Bench, contract: Contract, batch: Sequence[TradeRecord], gas: int
) -> dict:
    """The signed-ready recordTrades transaction for ``batch`` from the recorder, with the
    calldata the bridge sends."""
    w3 = bench.w3
    fees = current_fees(w3)
    return {
        "to": contract.address,
        "data": SettlementABI(contract.abi).record_trades(batch),
        "value": 0,
        "nonce": w3.eth.get_transaction_count(bench.recorder.address, "pending"),
        "gas": gas,
        "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
        "maxFeePerGas": fees.max_fee_per_gas,
        "chainId": w3.eth.chain_id,
    }


def signed_size(bench: Bench, contract: Contract, batch: Sequence[TradeRecord]) -> int:
    """Bytes of the signed transaction, as geth's size check counts them."""
    # The gas value only changes the size by a byte or two; 25M is as long as a real one.
    transaction = build_transaction(bench, contract, batch, gas=25_000_000)
    return len(bench.recorder.sign_transaction(transaction).raw_transaction)


def largest_batch(fits: Callable[[int], bool], upper: int = 4096) -> int:
    """The largest n in [1, upper] with ``fits(n)``; ``fits`` must be monotone."""
    low, high = 1, upper
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


@dataclass(frozen=True)
class Measurement:
    """One recorded batch."""

    trades: int
    gas_used: int
    transaction_bytes: int
    calldata_gas: int

    @property
    def per_trade(self) -> float:
        return self.gas_used / self.trades


def record(bench: Bench, contract: Contract, batch: Sequence[TradeRecord]) -> Measurement:
    """Send one batch and measure it."""
    w3 = bench.w3
    data = SettlementABI(contract.abi).record_trades(batch)
    gas = w3.eth.estimate_gas({"from": bench.recorder.address, "to": contract.address,
                               "data": data}) * 11 // 10
    transaction = build_transaction(bench, contract, batch, gas)
    signed = bench.recorder.sign_transaction(transaction)
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(signed.raw_transaction)
    )
    if receipt["status"] != 1:
        raise SystemExit(f"The batch of {len(batch)} reverted.")
    return Measurement(
        len(batch), receipt["gasUsed"], len(signed.raw_transaction), calldata_gas(data)
    )


def show(state: str, measurement: Measurement) -> None:
    """One table row."""
    print(
        f"{measurement.trades:>6} {state:>6} {measurement.transaction_bytes:>9} "
        f"{measurement.gas_used:>11} {measurement.per_trade:>10.0f}"
    )


def show_floor(measurement: Measurement) -> None:
    """What a trade costs whatever the code does: its id's slot, its log, its calldata."""
    dedupe = 22_100  # cold SLOAD 2,100 + SSTORE zero -> non-zero 20,000 (EIP-2929/2200)
    log = 375 + 4 * 375 + 8 * 7 * 32  # LOG3 base + 4 topics + 7 data words
    calldata = measurement.calldata_gas / measurement.trades
    floor = dedupe + log + calldata
    print(
        f"floor per trade: id slot {dedupe} + TradeSettled log {log} + calldata "
        f"{calldata:.0f} = {floor:.0f}; bills, decoding and the loop add "
        f"{measurement.per_trade - floor:.0f}"
    )


def deploy(bench: Bench) -> Contract:
    """A fresh Settlement (compiled or taken from build/contracts) with the bench's recorder."""
    compiled = compile_settlement()
    deployment = deploy_settlement(
        bench.w3, bench.operator, bench.recorder.address, compiled=compiled
    )
    return settlement_contract(bench.w3, deployment)


def main(argv: Sequence[str] | None = None) -> int:
    """Print one row per batch size; exit 1 if a full batch misses the gas target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", action="store_true",
                        help="measure on a real local Clique network instead of eth-tester")
    args = parser.parse_args(argv)
    if args.chain:
        with local_chain() as bench:
            return measure(bench)
    return measure(connect())


def measure(bench: Bench) -> int:
    """Deploy, then record batches of each size on ``bench`` and print the table."""
    pool = [record for path in sorted(DATA_DIR.glob("*.jsonl")) for record in read_recording(path)]
    rng = random.Random(SEED)
    contract = deploy(bench)
    full = largest_batch(
        lambda n: signed_size(bench, contract, sample_trades(pool, n, rng)) <= MAX_TRANSACTION_BYTES
    )
    print(f"{'batch':>6} {'state':>6} {'tx bytes':>9} {'gas used':>11} {'gas/trade':>10}")
    show("cold", record(bench, contract, sample_trades(pool, full, rng)))
    # Every participant now has a bill: the steady state the bridge runs in.
    for start in range(0, len(pool), full):
        record(bench, contract, pool[start : start + full])
    for size in (*BATCH_SIZES, full):
        measurement = record(bench, contract, sample_trades(pool, size, rng))
        show("steady", measurement)
    show_floor(measurement)
    per_trade = measurement.per_trade
    met = per_trade <= GAS_TARGET_PER_TRADE
    print(
        f"largest batch under {MAX_TRANSACTION_BYTES} bytes: {full} trades; "
        f"target {GAS_TARGET_PER_TRADE} gas/trade in a full batch: {'met' if met else 'MISSED'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
