"""A Settlement deployed on an in-process London EVM (eth-tester), for the contract's own tests
(tests/test_contract.py, tests/test_metering_contract.py).

Each module asks for ``evm`` (deployed once per module) and ``fresh`` (the same, rolled back to
right after deployment when the test ends); the helpers send, decode reverts and read events the
same way in both.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from eth.vm.forks import LondonVM
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from recordings import RECORDINGS
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.logs import DISCARD

from pilotchain.contract import CompiledContract, Deployment, deploy_settlement
from pilotchain.metering import Domain
from pilotchain.settlement import SettlementABI
from pilotchain.trades import TradeRecord, read_recording

__all__ = ["TX_GAS", "Evm", "deploy_evm", "events", "fresh", "recordings", "revert_data",
           "revert_of", "send"]

# Enough for the largest batch a test sends; set explicitly because eth-tester's gas
# estimate re-executes a transaction a dozen times.
TX_GAS = 25_000_000


@dataclass
class Evm:
    """A deployed Settlement with its operator, recorder, reader (when granted) and an
    unprivileged outsider; throwaway keys from a fixed seed."""

    tester: EthereumTester
    w3: Web3
    operator: LocalAccount
    recorder: LocalAccount
    reader: LocalAccount
    outsider: str
    deployment: Deployment
    contract: Contract

    @property
    def domain(self) -> Domain:
        return Domain(self.w3.eth.chain_id, self.contract.address)


def deploy_evm(compiled: CompiledContract, seed: int, *, grant_reader: bool) -> Evm:
    """A fresh London EVM with Settlement deployed; the reader holds READER_ROLE only if
    ``grant_reader``."""
    genesis = PyEVMBackend.generate_genesis_params({"gas_limit": 60_000_000})
    tester = EthereumTester(
        PyEVMBackend(genesis_parameters=genesis, vm_configuration=((0, LondonVM),))
    )
    w3 = Web3(EthereumTesterProvider(tester))
    rng = random.Random(seed)
    operator, recorder, reader = (Account.from_key(rng.randbytes(32)) for _ in range(3))
    for account in (operator, recorder, reader):
        # Unlocked in eth-tester too, so tests can use transact({"from": ...}).
        tester.add_account(account.key.to_0x_hex())
        w3.eth.send_transaction(
            {"from": w3.eth.accounts[0], "to": account.address, "value": 10**21}
        )
    deployment = deploy_settlement(w3, operator, recorder.address,
                                   reader=reader.address if grant_reader else None,
                                   compiled=compiled)
    contract = w3.eth.contract(address=deployment.address, abi=compiled.abi)
    return Evm(tester, w3, operator, recorder, reader, w3.eth.accounts[2], deployment, contract)


@pytest.fixture
def fresh(evm: Evm) -> Iterator[Evm]:
    """The module's evm, rolled back to right after deployment when the test ends."""
    snapshot = evm.tester.take_snapshot()
    yield evm
    evm.tester.revert_to_snapshot(snapshot)


@pytest.fixture(scope="session")
def recordings() -> dict[str, list[TradeRecord]]:
    return {path.stem: read_recording(path) for path in RECORDINGS}


def send(evm: Evm, function: Any, sender: str) -> Any:
    """Send a transaction that must succeed; return its receipt."""
    receipt = evm.w3.eth.get_transaction_receipt(
        function.transact({"from": sender, "gas": TX_GAS})
    )
    assert receipt["status"] == 1
    return receipt


def revert_data(error: BaseException) -> bytes:
    """The revert data behind a failed call, from web3 (real node) or eth-tester."""
    data = getattr(error, "data", None)
    if isinstance(data, str):
        return bytes.fromhex(data.removeprefix("0x"))
    # web3's eth-tester provider puts the raw data's repr into the message.
    reason = str(error).removeprefix("execution reverted: ")
    if reason.startswith(("b'", 'b"')):
        data = ast.literal_eval(reason)
        assert isinstance(data, bytes)
        return data
    raise AssertionError(f"no revert data in {error!r}")


def revert_of(evm: Evm, function: Any, sender: str) -> str:
    """The custom error a call from ``sender`` reverts with; also checks a sent one fails."""
    receipt = evm.w3.eth.get_transaction_receipt(
        function.transact({"from": sender, "gas": TX_GAS})
    )
    assert receipt["status"] == 0
    with pytest.raises(TransactionFailed) as failure:
        function.call({"from": sender})
    return SettlementABI(evm.contract.abi).describe_revert(revert_data(failure.value))


def events(evm: Evm, receipt: Any, name: str) -> list[dict[str, Any]]:
    event = getattr(evm.contract.events, name)()
    return [dict(entry["args"]) for entry in event.process_receipt(receipt, errors=DISCARD)]
