"""Chain access shared by the bridge, the faucet and the scripts.

One place for: connecting (HTTP, WebSocket or IPC) with Clique's proof-of-authority
middleware, turning raw node errors into sentences, EIP-1559 fees, signing and nonces.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from eth_account.signers.local import LocalAccount
from eth_utils import ValidationError
from hexbytes import HexBytes
from web3 import IPCProvider, Web3
from web3.exceptions import TimeExhausted, TransactionNotFound, Web3RPCError
from web3.middleware import ExtraDataToPOAMiddleware
from web3.types import TxParams, TxReceipt

from pilotchain.errors import ChainError

GWEI = 10**9
# geth's miner takes only transactions tipping at least --miner.gasprice (1 gwei by default).
DEFAULT_PRIORITY_FEE = 1 * GWEI
NONCE_ERRORS = ("nonce too low", "nonce too high", "already known", "replacement transaction")

T = TypeVar("T")


def connect(url: str, *, timeout: float = 10.0) -> Web3:
    """A Web3 for ``url`` (http(s)://, or a path to a geth IPC socket) with PoA support.

    Clique headers carry 97 bytes of extraData, which web3 rejects unless the PoA
    middleware runs first, hence layer 0.
    """
    if url.startswith(("http://", "https://")):
        provider: Any = Web3.HTTPProvider(url, request_kwargs={"timeout": timeout})
    elif url.startswith(("ws://", "wss://")):
        raise ChainError(
            f"Use the HTTP URL for {url}: synchronous PilotChain tools talk HTTP or IPC."
        )
    else:
        provider = IPCProvider(url, timeout=timeout)
    w3 = Web3(provider)
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    return w3


def describe(url: str) -> str:
    return url if "://" in url else f"the IPC socket {url}"


def call(url: str, action: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` and turn a node or connection failure into a ChainError sentence."""
    try:
        return fn()
    except Web3RPCError as error:
        raise ChainError(f"{action} failed: the node at {describe(url)} said: "
                         f"{rpc_message(error)}.") from None
    except ValidationError as error:
        # What an in-process EVM (eth-tester) raises where geth answers with an RPC error.
        raise ChainError(f"{action} failed: {error}.") from None
    except (requests.ConnectionError, requests.Timeout, ConnectionError, FileNotFoundError,
            TimeoutError):
        raise ChainError(
            f"{action} failed: cannot reach the node at {describe(url)}. Is the chain up "
            "(./scripts/status)?"
        ) from None


def rpc_message(error: Web3RPCError) -> str:
    """The node's own message out of a Web3RPCError, without web3's wrapping."""
    response = getattr(error, "rpc_response", None) or {}
    detail = response.get("error") if isinstance(response, dict) else None
    if isinstance(detail, dict) and detail.get("message"):
        return str(detail["message"])
    return str(error.message if hasattr(error, "message") else error)


def wait_for(condition: Callable[[], T | None], *, timeout: float, what: str,
             interval: float = 0.2) -> T:
    """Poll ``condition`` until it returns something truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except (ChainError, OSError, requests.RequestException, Web3RPCError) as error:
            last_error = error
        if time.monotonic() >= deadline:
            hint = f" (last error: {last_error})" if last_error else ""
            raise ChainError(f"Timed out after {timeout:.0f} s waiting for {what}{hint}.")
        time.sleep(interval)


@dataclass(frozen=True)
class Fees:
    max_fee_per_gas: int
    max_priority_fee_per_gas: int


def current_fees(w3: Web3, *, priority_fee: int = DEFAULT_PRIORITY_FEE,
                 headroom: int = 2) -> Fees:
    """EIP-1559 fees: ``headroom`` times the current base fee plus the tip.

    The base fee can rise 12.5% a block, so twice the current one keeps a transaction
    includable through several full blocks in a row.
    """
    base_fee = w3.eth.get_block("latest")["baseFeePerGas"]
    return Fees(headroom * base_fee + priority_fee, priority_fee)


class Sender:
    """Signs and sends transactions from one account, one at a time, tracking the nonce.

    The nonce is kept locally (so a burst of sends needs no round trip each) and re-read
    from the node's pending state whenever the node complains about it.
    """

    def __init__(self, w3: Web3, account: LocalAccount, *, url: str = "the RPC node",
                 priority_fee: int = DEFAULT_PRIORITY_FEE) -> None:
        self.w3 = w3
        self.account = account
        self.url = url
        self.priority_fee = priority_fee
        self._lock = threading.Lock()
        self._nonce: int | None = None
        self._chain_id: int | None = None

    @property
    def address(self) -> str:
        return self.account.address

    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = call(self.url, "Reading the chain id", lambda: self.w3.eth.chain_id)
        return self._chain_id

    def resync_nonce(self) -> int:
        """Forget the local nonce and take the node's pending count."""
        self._nonce = call(
            self.url, "Reading the account nonce",
            lambda: self.w3.eth.get_transaction_count(self.account.address, "pending"),
        )
        return self._nonce

    def send(self, tx: TxParams, *, fees: Fees | None = None) -> HexBytes:
        """Sign and submit ``tx``; returns once the node has accepted it into its pool."""
        with self._lock:
            for attempt in range(2):
                if self._nonce is None or attempt:
                    self.resync_nonce()
                signed = self.sign(tx, self._nonce, fees)
                try:
                    tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
                except Web3RPCError as error:
                    message = rpc_message(error)
                    if attempt == 0 and any(marker in message for marker in NONCE_ERRORS):
                        continue
                    raise ChainError(f"The node refused the transaction: {message}.") from None
                except (requests.ConnectionError, requests.Timeout, ConnectionError):
                    # Unknown whether it arrived: the next send re-reads the nonce.
                    self._nonce = None
                    raise ChainError(
                        f"Cannot reach the node at {describe(self.url)} to send a transaction."
                    ) from None
                self._nonce += 1
                return HexBytes(tx_hash)
        raise AssertionError("unreachable")

    def sign(self, tx: TxParams, nonce: int, fees: Fees | None = None) -> Any:
        """Fill in chain id, nonce, fees and gas, then sign with the account's key."""
        fees = fees or call(self.url, "Reading the base fee",
                            lambda: current_fees(self.w3, priority_fee=self.priority_fee))
        full: dict[str, Any] = {
            "chainId": self.chain_id(),
            "nonce": nonce,
            "from": self.account.address,
            "maxFeePerGas": fees.max_fee_per_gas,
            "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
            **tx,
        }
        full["type"] = 2
        if "gas" not in full:
            full["gas"] = call(self.url, "Estimating gas", lambda: self.w3.eth.estimate_gas(full))
        return self.account.sign_transaction(full)


def wait_for_receipt(w3: Web3, tx_hash: HexBytes, *, timeout: float = 60.0) -> TxReceipt:
    """The receipt of ``tx_hash``, or a ChainError after ``timeout`` seconds."""
    try:
        return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.1)
    except (TimeExhausted, TransactionNotFound):
        raise ChainError(
            f"Transaction {tx_hash.to_0x_hex()} was not mined within {timeout:.0f} s."
        ) from None
