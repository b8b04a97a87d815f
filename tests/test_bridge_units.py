"""Bridge parts without a chain: settings, the queue, the metrics endpoint, and the gas
limit against the contract's worst case on an in-process London EVM."""

from __future__ import annotations

import dataclasses
import random
import uuid
from pathlib import Path

import pytest
import requests
from eth_account import Account
from prometheus_checks import assert_prometheus_text, promtool_problems
from recordings import DATA

from bridge.config import BridgeSettings
from bridge.errors import BridgeConfigError
from bridge.events import decode_entry
from bridge.gas import gas_limit_for, max_trades_for_gas
from bridge.pipeline import TradeItem as Item
from pilotchain.contract import (
    BROADCAST_TRANSACTION_BYTES,
    CALLDATA_BYTES_PER_TRADE,
    broadcast_batch_size,
    compile_settlement,
    max_batch_size,
)
from pilotchain.errors import ConfigError
from pilotchain.settlement import SettlementABI
from pilotchain.trades import MAX_AMOUNT, read_recording
from worker.batching import Batcher
from worker.endpoint import HealthServer
from worker.entries import Rejected
from worker.metrics import STREAM_WORKER, Metrics


def test_settings_are_read_from_the_environment_with_defaults() -> None:
    settings = BridgeSettings.from_env({})
    assert (settings.redis_url, settings.stream) == ("redis://127.0.0.1:6379/0",
                                                     "pilotchain:trades")
    assert settings.dead_letter_stream == "pilotchain:trades:dead"
    assert settings.max_batch == max_batch_size()
    custom = BridgeSettings.from_env({
        "REDIS_URL": "redis://r:7/1", "BRIDGE_STREAM": "s", "BRIDGE_MAX_BATCH": "100",
        "BRIDGE_GAS_BUDGET": "0.5", "BRIDGE_METRICS_PORT": "9200", "RPC_URL": "http://n:1",
        "DEPLOYMENT_FILE": "/x/settlement.json"})
    assert (custom.redis_url, custom.stream, custom.dead_letter_stream) == \
        ("redis://r:7/1", "s", "s:dead")
    assert (custom.max_batch, custom.gas_budget) == (100, 0.5)
    assert custom.metrics_url == "http://127.0.0.1:9200"
    assert custom.chain.rpc_url == "http://n:1"
    assert custom.chain.deployment_file == Path("/x/settlement.json")


@pytest.mark.parametrize(("env", "message"), [
    ({"BRIDGE_MAX_BATCH": "5000"}, "BRIDGE_MAX_BATCH must be between 1 and"),
    ({"BRIDGE_GAS_BUDGET": "3"}, "BRIDGE_GAS_BUDGET must be above 0 and at most 2"),
    ({"BRIDGE_LINGER": "soon"}, "BRIDGE_LINGER must be a number, not 'soon'."),
    ({"BRIDGE_METRICS_PORT": "-1"}, "BRIDGE_METRICS_PORT must be at least 0, not -1."),
])
def test_bad_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises((BridgeConfigError, ConfigError), match=message.replace("(", r"\(")):
        BridgeSettings.from_env(env)


def item(index: int, queued_at: float = 0.0) -> Item:
    record = read_recording(DATA / "default_3_one_sided.jsonl")[0]
    record = dataclasses.replace(record, trade_id=uuid.UUID(int=index + 1))
    return Item(record, [f"{index}-0"], 0, queued_at)


def test_the_queue_batches_in_order_and_puts_failed_batches_back_in_front() -> None:
    batcher = Batcher(max_batch=3, linger=0.5)
    for index in range(5):
        batcher.add(item(index, queued_at=100.0))
    assert not Batcher(3, 0.5).ready(now=0.0)
    assert batcher.ready(now=100.0)  # a full batch waits
    first = batcher.take(10)
    assert [i.entry_ids[0] for i in first] == ["0-0", "1-0", "2-0"]
    assert not batcher.ready(now=100.2)  # two left, younger than the linger time
    assert batcher.ready(now=100.6)
    batcher.requeue(first)
    assert [i.entry_ids[0] for i in batcher.take(5)] == ["0-0", "1-0", "2-0"]


def test_batches_are_small_while_the_queue_is_short_and_full_when_it_is_long() -> None:
    batcher: Batcher[Item] = Batcher(max_batch=100, linger=0.5, small_batch=4, heavy_queue=10)
    for index in range(3):
        batcher.add(item(index, queued_at=100.0))
    assert not batcher.ready(now=100.1)  # three young trades: wait for a fourth
    batcher.add(item(3, queued_at=100.0))
    assert batcher.ready(now=100.1)  # a small batch is full: send it now
    assert len(batcher.take(100)) == 4
    for index in range(4, 13):
        batcher.add(item(index, queued_at=100.0))
    assert (batcher.batch_size(), len(batcher.take(100))) == (4, 4)  # 9 queued: short
    for index in range(13, 30):
        batcher.add(item(index, queued_at=100.0))
    assert batcher.batch_size() == 100  # 22 queued: long, so one full-size batch
    assert not batcher.ready(now=100.1)  # ...waiting for fuller up to the linger time
    assert len(batcher.take(100)) == 22
    assert len(batcher.take(100)) == 0
    off: Batcher[Item] = Batcher(max_batch=100, linger=0.5, small_batch=0, heavy_queue=10)
    for index in range(5):
        off.add(item(index, queued_at=100.0))
    assert (off.batch_size(), off.ready(now=100.1), len(off.take(100))) == (100, False, 5)
    with pytest.raises(BridgeConfigError, match="BRIDGE_SMALL_BATCH must be between 0"):
        BridgeSettings.from_env({"BRIDGE_MAX_BATCH": "10", "BRIDGE_SMALL_BATCH": "11"})


def test_a_small_batch_of_the_largest_trades_is_sent_whole_by_geth() -> None:
    """geth sends a transaction of at most 4 KiB to its peers and only announces a bigger
    one. A small batch of the largest trades, signed with the largest nonce, gas and fees it
    could carry, stays within; every trade adds exactly its 320 bytes of calldata."""
    abi = compile_settlement().abi
    widest = uuid.UUID(int=2**128 - 1)
    template = read_recording(DATA / "default_3_one_sided.jsonl")[0]
    largest = dataclasses.replace(template, trade_id=widest, market=widest,
                                  time_slot=2**63 - 1, seller=widest, buyer=widest,
                                  seller_origin=widest, buyer_origin=widest,
                                  energy=MAX_AMOUNT, price=MAX_AMOUNT, fee=MAX_AMOUNT)
    signer = Account.from_key(bytes(range(1, 33)))

    def signed_size(trades: int) -> int:
        data = SettlementABI(abi).record_trades([largest] * trades)
        tx = {"to": signer.address, "data": data, "value": 0, "gas": 2**63 - 1,
              "nonce": 2**64 - 2, "chainId": 2**32 - 1, "maxFeePerGas": 2**128 - 1,
              "maxPriorityFeePerGas": 2**128 - 1, "type": 2}
        return len(signer.sign_transaction(tx).raw_transaction)

    small = broadcast_batch_size()
    assert small == BridgeSettings().small_batch >= 10
    assert signed_size(small) <= BROADCAST_TRANSACTION_BYTES
    assert signed_size(small + 1) - signed_size(small) == CALLDATA_BYTES_PER_TRADE
    # One more trade would leave no room for a real envelope: the count is not too timid.
    assert signed_size(small + 2) > BROADCAST_TRANSACTION_BYTES


def test_the_endpoint_serves_prometheus_metrics_json_status_and_health() -> None:
    metrics = Metrics(*STREAM_WORKER)
    server = HealthServer(metrics, "127.0.0.1", 0)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert requests.get(f"{base}/health", timeout=5).status_code == 503  # starting
        starting = assert_prometheus_text(requests.get(f"{base}/metrics", timeout=5))
        assert starting['pilotchain_service_state{state="starting"}'] == 1
        assert starting["pilotchain_service_healthy"] == 0
        assert starting["pilotchain_entry_latency_seconds_count"] == 0
        metrics.add("received", 3)
        metrics.add("dead_lettered")
        metrics.set(state="running", last_block=7, redis="ok", chain="unreachable",
                    backlog=12)
        for seconds in (0.2, 1.5, 1.5, 700.0):
            metrics.latency(seconds)
        body = requests.get(f"{base}/status", timeout=5).json()
        for key in ("received", "settled", "pending", "dead_lettered", "last_block",
                    "latency_p95_s", "rss_bytes", "redis", "chain"):
            assert key in body
        assert (body["received"], body["last_block"], body["latency_p50_s"]) == (3, 7, 1.5)
        found = assert_prometheus_text(requests.get(f"{base}/metrics", timeout=5))
        assert (found["pilotchain_entries_received_total"],
                found["pilotchain_entries_dead_lettered_total"],
                found["pilotchain_chain_head_block"],
                found["pilotchain_stream_backlog_entries"]) == (3, 1, 7, 12)
        assert found['pilotchain_service_state{state="running"}'] == 1
        assert found['pilotchain_service_state{state="starting"}'] == 0
        assert (found["pilotchain_service_healthy"], found["pilotchain_redis_connected"],
                found["pilotchain_chain_connected"]) == (1, 1, 0)
        # Cumulative buckets: 0.2 under 0.5 s, the two 1.5 s under 2 s, 700 s only in +Inf.
        assert [found[f'pilotchain_entry_latency_seconds_bucket{{le="{le}"}}']
                for le in ("0.5", "1.0", "2.0", "600.0", "+Inf")] == [1, 1, 3, 3, 4]
        assert found["pilotchain_entry_latency_seconds_sum"] == pytest.approx(703.2)
        assert found["process_resident_memory_bytes"] > 0
        health = requests.get(f"{base}/health", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        metrics.set(warning="12 entries wait to be settled, more than 10.")
        degraded = assert_prometheus_text(requests.get(f"{base}/metrics", timeout=5))
        assert degraded["pilotchain_service_healthy"] == 0
        assert requests.get(f"{base}/nope", timeout=5).status_code == 404
    finally:
        server.stop()


def test_promtool_finds_what_a_bad_exposition_gets_wrong() -> None:
    """The checker the endpoint tests rely on is not blind: a counter without _total and a
    family without HELP are problems to it."""
    assert "counter metrics should have \"_total\" suffix" in promtool_problems(
        "# HELP things Things.\n# TYPE things counter\nthings 1\n")
    assert promtool_problems("# TYPE x_total counter\nx_total 1\n") != ""
    assert promtool_problems("# HELP x_total X.\n# TYPE x_total counter\nx_total 1\n") == ""


def test_the_gas_limit_covers_full_batches_of_new_parties_at_the_largest_amounts() -> None:
    """Every trade new and every bill slot new (all participants unseen), amounts at their
    maximum, batches up to the largest the writer sends: each succeeds within its limit."""
    from eth.vm.forks import LondonVM  # test-only dependency
    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import EthereumTesterProvider, Web3

    from pilotchain.contract import (
        deploy_settlement,
        settlement_contract,
    )
    from pilotchain.trades import MAX_AMOUNT

    genesis = PyEVMBackend.generate_genesis_params({"gas_limit": 60_000_000})
    w3 = Web3(EthereumTesterProvider(EthereumTester(
        PyEVMBackend(genesis_parameters=genesis, vm_configuration=((0, LondonVM),)))))
    rng = random.Random(5)
    operator, recorder = Account.from_key(rng.randbytes(32)), Account.from_key(rng.randbytes(32))
    for account in (operator, recorder):
        w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": account.address,
                                 "value": 10**21})
    deployment = deploy_settlement(w3, operator, recorder.address, compiled=compile_settlement())
    contract = settlement_contract(w3, deployment)
    template = read_recording(DATA / "default_3_one_sided.jsonl")[0]
    for size in (1, 50, max_trades_for_gas(60_000_000)):
        batch = [dataclasses.replace(template, trade_id=uuid.uuid4(), seller=uuid.uuid4(),
                                     buyer=uuid.uuid4(), energy=MAX_AMOUNT >> 34,
                                     price=MAX_AMOUNT >> 34, fee=MAX_AMOUNT)
                 for _ in range(size)]
        data = SettlementABI(contract.abi).record_trades(batch)  # what the writer sends
        limit = gas_limit_for(data, size)
        tx = {"to": contract.address, "data": data, "value": 0, "gas": limit,
              "nonce": w3.eth.get_transaction_count(recorder.address),
              "chainId": w3.eth.chain_id, "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}
        tx_hash = w3.eth.send_raw_transaction(recorder.sign_transaction(tx).raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
        assert receipt["status"] == 1, f"a batch of {size} ran out of {limit} gas"
    # The dearest trades (metered parties, new period) are measured against the constant in
    # tests/test_metering_contract.py. At the default gas limit, gas and not size limits a
    # batch, and a full batch's limit leaves room for others in the same block.
    assert max_trades_for_gas(60_000_000) < max_batch_size()
    most = max_trades_for_gas(60_000_000)
    assert gas_limit_for(bytes(most * CALLDATA_BYTES_PER_TRADE), most) <= 30_000_000


def test_settings_survive_the_trip_through_the_environment(tmp_path: Path) -> None:
    from pilotchain.config import ChainSettings

    chain = dataclasses.replace(ChainSettings(), rpc_url_override="http://node:8545",
                                keys_dir=tmp_path / "keys", data_dir=tmp_path / "data",
                                genesis_file=tmp_path / "genesis.json",
                                deployment_file_override=tmp_path / "settlement.json")
    settings = dataclasses.replace(BridgeSettings(chain=chain), max_batch=77, linger=0.5,
                                   gas_budget=0.4, metrics_port=9999, consumer="b2")
    assert BridgeSettings.from_env(settings.to_env()) == settings


def test_an_entry_deleted_from_the_stream_is_rejected_with_a_reason() -> None:
    # Redis lists a pending entry trimmed away meanwhile with no fields.
    rejected = decode_entry("1700000000000-0", None)
    assert isinstance(rejected, Rejected)
    assert "deleted from the stream" in rejected.reason


@pytest.mark.parametrize(("payload", "reason"), [
    ('{"market_id": "m", "trade": {"energy": ' + "9" * 5000 + "}}",
     "A number has 5000 digits; no field of a trade takes more than 40 (amounts fit 96 bits)."),
    ("[" * 100_000 + "]" * 100_000,
     "The event holds 200000 brackets, quotes and backslashes, more than 100000; that is not "
     "one gsy-e trade event."),
    ("[" * 40 + "]" * 40,
     "The event nests arrays or objects more than 32 deep; a gsy-e trade event is a few "
     "objects deep."),
    ('{"trade": {"energy": NaN}}', "NaN is not a JSON number; amounts of a trade are finite "
                                   "numbers."),
    ('{"trade": {"energy": 1e999}}',
     "The number 1e999 is too large; amounts of a trade are finite numbers."),
    ('{"trade": {"energy": 0.' + "1" * 90 + "}}",
     "A number is written with 92 characters; no amount of a trade is written that long."),
    ("{nope", "The event is not JSON: Expecting property name enclosed in double quotes at "
              "character 1."),
])
def test_an_entry_beyond_the_event_bounds_is_rejected_with_a_sentence_never_raised(
        payload: str, reason: str) -> None:
    """json.loads alone raised ValueError on the 5,000-digit integer (past the bridge's
    JSONDecodeError), took NaN, and with py_ecc's recursion limit would crash the process on
    the deep nesting: a stream entry could stop the bridge."""
    rejected = decode_entry("1700000000000-0", {"event": payload})
    assert isinstance(rejected, Rejected)
    assert rejected.reason == reason
