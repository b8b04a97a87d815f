"""Chain access shared by the bridge, the faucet and the scripts.

One place for: connecting (HTTP, WebSocket or IPC) with Clique's proof-of-authority
middleware, turning raw node errors into sentences, JSON-RPC batches, EIP-1559 fees,
signing and nonces.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar, cast

import requests
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.crypto import keccak
from eth_utils.exceptions import ValidationError
from hexbytes import HexBytes
from web3 import IPCProvider, Web3
from web3.exceptions import (
    ContractLogicError,
    TransactionIndexingInProgress,
    TransactionNotFound,
    Web3Exception,
    Web3RPCError,
)
from web3.middleware import ExtraDataToPOAMiddleware
from web3.providers.base import JSONBaseProvider
from web3.types import FilterParams, LogReceipt, RPCEndpoint, RPCResponse, TxParams, TxReceipt

from pilotchain.errors import ChainError

GWEI = 10**9
# geth's miner takes only transactions tipping at least --miner.gasprice (1 gwei by default).
DEFAULT_PRIORITY_FEE = 1 * GWEI
NONCE_ERRORS = ("nonce too low", "nonce too high", "already known", "replacement transaction")

T = TypeVar("T")
log = logging.getLogger(__name__)


class ChainUnreachable(ChainError):
    """The node did not answer (connection refused, reset or timed out)."""


class NodeRefused(ChainError):
    """The node answered with an error.

    ``reason`` is the node's own message, for logs and for callers that react to a
    particular refusal (e.g. "insufficient funds"); it is not meant for end users.
    """

    def __init__(self, sentence: str, reason: str) -> None:
        super().__init__(sentence)
        self.reason = reason


def connect(url: str, *, timeout: float = 10.0, env_proxies: bool = True) -> Web3:
    """A Web3 for ``url`` (http(s)://, or a path to a geth IPC socket) with PoA support.

    Clique headers carry 97 bytes of extraData, which web3 rejects unless the PoA
    middleware runs first, hence layer 0. ``env_proxies=False`` (HTTP only) skips what
    requests does on every call to honour HTTP(S)_PROXY and .netrc, about a quarter of a
    call's CPU, for busy services that reach the node directly.
    """
    if url.startswith(("http://", "https://")):
        session = None
        if not env_proxies:
            session = requests.Session()
            session.trust_env = False
        provider: Any = Web3.HTTPProvider(url, request_kwargs={"timeout": timeout},
                                          session=session)
    elif url.startswith(("ws://", "wss://")):
        raise ChainError(
            f"Use the HTTP URL for {url}: synchronous PilotChain tools talk HTTP or IPC."
        )
    else:
        provider = IPCProvider(url, timeout=math.ceil(timeout))
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
        reason = rpc_message(error)
        raise NodeRefused(f"{action} failed: the node at {describe(url)} said: {reason}.",
                          reason) from None
    except ValidationError as error:
        # What an in-process EVM (eth-tester) raises where geth answers with an RPC error.
        raise NodeRefused(f"{action} failed: {error}.", str(error)) from None
    except (requests.ConnectionError, requests.Timeout, ConnectionError, FileNotFoundError,
            TimeoutError):
        raise ChainUnreachable(
            f"{action} failed: cannot reach the node at {describe(url)}. Is the chain up "
            "(./scripts/status)?"
        ) from None


def read(url: str, action: str, fn: Callable[[], T]) -> T:
    """``call`` for a service that retries: an HTTP error or a malformed answer (e.g. from
    a node still starting) also counts as the node being unreachable. A revert
    (ContractLogicError) is an answer and reaches the caller as it is."""
    try:
        return call(url, action, fn)
    except requests.RequestException:
        raise ChainUnreachable(
            f"{action} failed: the node at {describe(url)} answered with an HTTP error."
        ) from None
    except ContractLogicError:
        raise
    except (Web3Exception, json.JSONDecodeError) as error:
        raise ChainUnreachable(
            f"{action} failed: unexpected answer from the node at {describe(url)}: {error}"
        ) from None


# Blocks per eth_getLogs request: small enough for any node's limits.
LOG_PAGE_BLOCKS = 5_000


def contract_logs(w3: Web3, url: str, address: str, first: int, last: int, *,
                  topics: Sequence[bytes] | None = None,
                  page_blocks: int = LOG_PAGE_BLOCKS) -> Iterator[Sequence[LogReceipt]]:
    """The logs of the contract at ``address`` in blocks ``first`` to ``last``, in chain
    order, one page of ``page_blocks`` blocks at a time; with ``topics``, only the logs whose
    first topic is one of them."""
    start = first
    while start <= last:
        end = min(start + page_blocks - 1, last)
        query: FilterParams = {"address": Web3.to_checksum_address(address),
                               "fromBlock": start, "toBlock": end}
        if topics is not None:
            query["topics"] = [[HexBytes(topic) for topic in topics]]
        yield read(url, f"Reading the logs of blocks {start}-{end}",
                   partial(w3.eth.get_logs, query))
        start = end + 1


def batch_call(w3: Web3, url: str, action: str,
               requests_: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
    """The raw results of ``requests_`` (method, params), sent as one JSON-RPC batch: one
    round trip however many there are. Results come in request order, unformatted by
    web3 (which for a large batch costs far more than the node's answer).

    The node refusing the batch or any request in it raises NodeRefused; no answer, or
    one that does not fit the batch, raises ChainUnreachable.
    """
    if not requests_:
        return []
    provider = w3.provider
    if not isinstance(provider, JSONBaseProvider):
        raise ChainError(f"{action} failed: {type(provider).__name__} sends no JSON-RPC batches.")
    batch = [(RPCEndpoint(method), params) for method, params in requests_]
    replies = read(url, action, lambda: provider.make_batch_request(batch))
    if not isinstance(replies, list):  # the node refused the batch as a whole
        reason = _reply_error(replies)
        raise NodeRefused(
            f"{action} failed: the node at {describe(url)} refused the batch: {reason}.", reason)
    if len(replies) != len(batch):
        raise ChainUnreachable(
            f"{action} failed: the node at {describe(url)} answered {len(replies)} of "
            f"{len(batch)} requests."
        )
    results = []
    for reply in replies:  # web3 sorts replies by id, and hands out ids in request order
        if "error" in reply:
            reason = _reply_error(reply)
            raise NodeRefused(f"{action} failed: the node at {describe(url)} said: {reason}.",
                              reason)
        results.append(reply.get("result"))
    return results


def _reply_error(reply: RPCResponse) -> str:
    """The node's message in a JSON-RPC error reply."""
    error = reply.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(error if error is not None else reply)


def rpc_message(error: Web3RPCError) -> str:
    """The node's own message out of a Web3RPCError, without web3's wrapping."""
    response = getattr(error, "rpc_response", None) or {}
    detail = response.get("error") if isinstance(response, dict) else None
    if isinstance(detail, dict) and detail.get("message"):
        return str(detail["message"])
    return str(error.message if hasattr(error, "message") else error)


WAIT_ERRORS = (ChainError, OSError, requests.RequestException, Web3RPCError)


def wait_for(condition: Callable[[], T | None], *, timeout: float, what: str,
             interval: float = 0.2) -> T:
    """Poll ``condition`` until it returns something truthy, or fail naming ``what``.

    For waits on something other than the chain (a process starting, a port opening). A wait
    for the chain to get somewhere counts blocks instead: :func:`wait_for_blocks`.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except WAIT_ERRORS as error:
            last_error = error
        if time.monotonic() >= deadline:
            hint = f" (last error: {last_error})" if last_error else ""
            raise ChainError(f"Timed out after {timeout:.0f} s waiting for {what}{hint}.")
        time.sleep(interval)


# A chain that seals no block for this many periods (and at least HALT_FLOOR seconds) has
# halted. A loaded two-core machine delays a block by seconds, never by half a minute.
HALT_PERIODS = 30
HALT_FLOOR = 60.0


def halt_after(period: float) -> float:
    """Seconds without a new block after which a wait on the chain takes it to have halted."""
    return max(HALT_FLOOR, HALT_PERIODS * period)


@dataclass(frozen=True)
class Head:
    """A node's newest block: how far its chain got, in blocks and in chain time."""

    number: int
    timestamp: int


def head_of(w3: Web3) -> Head:
    block = w3.eth.get_block("latest")
    return Head(int(block["number"]), int(block["timestamp"]))


def wait_on_chain(condition: Callable[[], T | None], *, w3: Web3, period: float, what: str,
                  past: Callable[[Head, Head], str | None], interval: float = 0.2,
                  progress: Callable[[], object] | None = None) -> T:
    """Poll ``condition`` until it returns something truthy, measuring the wait by the chain
    of ``w3``'s node rather than by the clock: fail once ``past(start, head)`` says why the
    deadline has passed (it returns None until then), or once the chain has halted (no new
    block for :func:`halt_after` ``period``).

    With ``progress`` (a reading of how far the awaited work got, such as a count of
    settled trades), ``start`` is the head when that reading last changed: the deadline is
    then for the work standing still, however long it takes while it moves.

    The head is read before the condition, so a condition that holds by the time the head
    reaches the deadline is always seen. Only the halt is timed by the clock.
    """
    halt = halt_after(period)
    start: Head | None = None
    seen: Head | None = None
    moved = time.monotonic()
    last_error: Exception | None = None
    unread = object()
    reached: object = unread
    while True:
        head: Head | None = None
        try:
            head = head_of(w3)
        except WAIT_ERRORS as error:
            last_error = error
        if head is not None:
            if seen is None or head.number > seen.number:
                seen, moved = head, time.monotonic()
            start = start or head
            if progress is not None:
                try:
                    now = progress()
                except WAIT_ERRORS as error:
                    last_error = error
                else:
                    if now != reached:
                        reached, start = now, head
        try:
            result = condition()
            if result:
                return result
        except WAIT_ERRORS as error:
            last_error = error
        hint = f" (last error: {last_error})" if last_error else ""
        reason = past(start, head) if start is not None and head is not None else None
        if reason:
            raise ChainError(f"Timed out waiting for {what}: {reason}{hint}.")
        if time.monotonic() - moved >= halt:
            where = (f"stayed at block {seen.number} ({seen.number - start.number} blocks "
                     f"after the wait began)" if seen and start else "answered no head")
            raise ChainError(
                f"Timed out waiting for {what}: the chain {where} for {halt:.0f} s, "
                f"{halt / period:.0f} periods of {period:g} s, so it has halted{hint}.")
        time.sleep(interval)


def wait_for_blocks(condition: Callable[[], T | None], *, w3: Web3, blocks: int,
                    period: float, what: str, why: str, interval: float = 0.2,
                    progress: Callable[[], object] | None = None) -> T:
    """Poll ``condition`` until it returns something truthy; fail once ``w3``'s node is
    ``blocks`` blocks past its head at the start without it, naming ``what`` was awaited and
    ``why`` that many blocks are enough (or once the chain has halted: see
    :func:`wait_on_chain`). With ``progress``, the blocks count from the last change of its
    reading: the deadline is for the awaited work standing still."""

    def past(start: Head, head: Head) -> str | None:
        went = head.number - start.number
        if went < blocks:
            return None
        still = "" if progress is None else ", nothing having moved since"
        return (f"the chain went {went} blocks past block {start.number}{still} without it "
                f"({blocks} allowed: {why})")

    return wait_on_chain(condition, w3=w3, period=period, what=what, past=past,
                         interval=interval, progress=progress)


def wait_until_chain_time(condition: Callable[[], T | None], *, w3: Web3, until: int,
                          period: float, what: str, why: str, interval: float = 0.2) -> T:
    """Poll ``condition`` until it returns something truthy; fail once the head of ``w3``'s
    node is timed ``until`` (Unix seconds, chain time) or later without it, naming ``what``
    and ``why`` that deadline (or once the chain has halted: see :func:`wait_on_chain`).
    For what the chain's clock decides, such as a metered slot falling due."""

    def past(start: Head, head: Head) -> str | None:
        if head.timestamp < until:
            return None
        return (f"the chain's head reached time {until} (block {head.number}, "
                f"{head.number - start.number} blocks after the wait began) without it "
                f"(the deadline: {why})")

    return wait_on_chain(condition, w3=w3, period=period, what=what, past=past,
                         interval=interval)


# What a node answers for a receipt it does not have yet: none, or (geth, for a while after it
# starts) that it is still indexing transactions and cannot tell.
NOT_MINED_YET = (TransactionNotFound, TransactionIndexingInProgress)


def receipt_within(w3: Web3, tx_hash: HexBytes, *, blocks: int, period: float,
                   why: str = "a sent transaction goes into one of the next blocks") -> TxReceipt:
    """The receipt of ``tx_hash``, or a ChainError once ``w3``'s node went ``blocks`` blocks
    on without it (see :func:`wait_for_blocks`)."""

    def receipt() -> TxReceipt | None:
        try:
            return w3.eth.get_transaction_receipt(tx_hash)
        except NOT_MINED_YET:
            return None

    return wait_for_blocks(receipt, w3=w3, blocks=blocks, period=period, why=why,
                           what=f"transaction {tx_hash.to_0x_hex()} to be mined")


@dataclass(frozen=True)
class Fees:
    max_fee_per_gas: int
    max_priority_fee_per_gas: int


# geth replaces a pending transaction only if both fees rise by --txpool.pricebump (10%).
REPLACEMENT_BUMP_PERCENT = 13


def replacement_fees(old: Fees, current: Fees) -> Fees:
    """Fees for a transaction that replaces one sent with ``old`` at the same nonce: both
    fees at least 13% above the old ones (geth wants 10%), and never below ``current``."""
    def bumped(value: int) -> int:
        return value * (100 + REPLACEMENT_BUMP_PERCENT) // 100 + 1

    return Fees(max(bumped(old.max_fee_per_gas), current.max_fee_per_gas),
                max(bumped(old.max_priority_fee_per_gas), current.max_priority_fee_per_gas))


def fees_for(base_fee: int, *, priority_fee: int = DEFAULT_PRIORITY_FEE,
             headroom: int = 2) -> Fees:
    """EIP-1559 fees over ``base_fee``: ``headroom`` times it plus the tip.

    The base fee can rise 12.5% a block, so twice the current one keeps a transaction
    includable through several full blocks in a row.
    """
    return Fees(headroom * base_fee + priority_fee, priority_fee)


def current_fees(w3: Web3, *, priority_fee: int = DEFAULT_PRIORITY_FEE,
                 headroom: int = 2) -> Fees:
    """``fees_for`` the latest block's base fee."""
    base_fee = w3.eth.get_block("latest")["baseFeePerGas"]
    return fees_for(base_fee, priority_fee=priority_fee, headroom=headroom)


class NonceStore(Protocol):
    """Where a Sender keeps the account's next nonce between sends (None: ask the node)."""

    def load(self) -> int | None: ...

    def save(self, nonce: int | None) -> None: ...


class LocalNonce:
    """The default NonceStore: the next nonce in this process's memory."""

    def __init__(self) -> None:
        self._nonce: int | None = None

    def load(self) -> int | None:
        return self._nonce

    def save(self, nonce: int | None) -> None:
        self._nonce = nonce


class Sender:
    """Signs and sends transactions from one account, one at a time, tracking the nonce.

    The nonce is kept locally (so a burst of sends needs no round trip each) and re-read
    from the node's pending state whenever the node complains about it.

    Several processes sending from one account pass the same ``lock`` (a reusable context
    manager, e.g. a Redis lock, taken after this process's own thread lock) and a shared
    ``nonces`` store, so each send starts from the nonce the previous one left, whoever
    sent it. geth counts a just-accepted transaction in its pending nonce only after its
    pool's next reorganisation, so re-reading the node before every send would race.
    """

    def __init__(self, w3: Web3, account: LocalAccount, *, url: str = "the RPC node",
                 priority_fee: int = DEFAULT_PRIORITY_FEE,
                 lock: AbstractContextManager[Any] | None = None,
                 nonces: NonceStore | None = None) -> None:
        self.w3 = w3
        self.account = account
        self.url = url
        self.priority_fee = priority_fee
        self._lock = threading.Lock()
        self._shared_lock = lock if lock is not None else contextlib.nullcontext()
        self._nonces = nonces if nonces is not None else LocalNonce()
        self._chain_id: int | None = None

    @property
    def address(self) -> ChecksumAddress:
        return self.account.address

    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = call(self.url, "Reading the chain id", lambda: self.w3.eth.chain_id)
        return self._chain_id

    def resync_nonce(self) -> int:
        """Forget the tracked nonce and take the node's pending count."""
        nonce = call(
            self.url, "Reading the account nonce",
            lambda: self.w3.eth.get_transaction_count(self.account.address, "pending"),
        )
        self._nonces.save(nonce)
        return nonce

    def send(self, tx: TxParams, *, fees: Fees | None = None) -> HexBytes:
        """Sign and submit ``tx``; returns once the node has accepted it into its pool."""
        with self._lock, self._shared_lock:
            for attempt in range(2):
                nonce = self._nonces.load()
                if nonce is None or attempt:
                    nonce = self.resync_nonce()
                signed = self.sign(tx, nonce, fees)
                try:
                    tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
                except Web3RPCError as error:
                    message = rpc_message(error)
                    if attempt == 0 and any(marker in message for marker in NONCE_ERRORS):
                        # Recovered, but worth knowing: another sender used this account.
                        log.warning("The node refused nonce %s of %s (%s); re-reading the "
                                    "nonce from the node.", nonce, self.account.address, message)
                        continue
                    raise NodeRefused(f"The node refused the transaction: {message}.",
                                      message) from None
                except (requests.ConnectionError, requests.Timeout, ConnectionError):
                    # Unknown whether it arrived: the next send re-reads the nonce.
                    self._nonces.save(None)
                    raise ChainUnreachable(
                        f"Cannot reach the node at {describe(self.url)} to send a transaction."
                    ) from None
                self._nonces.save(nonce + 1)
                return HexBytes(tx_hash)
        raise AssertionError("unreachable")

    def reserve_nonce(self) -> int:
        """Take the next nonce for a transaction the caller signs and sends itself.

        The caller owns the nonce until a transaction with it is mined: it must keep
        (re)sending one, or call ``resync_nonce`` if it gives the nonce up, since a gap
        holds back every later transaction of the account.
        """
        with self._lock, self._shared_lock:
            nonce = self._nonces.load()
            if nonce is None:
                nonce = self.resync_nonce()
            self._nonces.save(nonce + 1)
            return nonce

    def send_raw(self, raw_transaction: bytes) -> HexBytes:
        """Submit a signed transaction (new, re-broadcast or replacement); return its hash.

        A node that already has it ("already known") counts as success. A refusal raises
        ``NodeRefused``; an unreachable node raises ``ChainUnreachable``, and then the
        transaction may or may not have arrived, so the caller sends it again later.
        """
        tx_hash = HexBytes(keccak(raw_transaction))
        try:
            self.w3.eth.send_raw_transaction(raw_transaction)
        except Web3RPCError as error:
            message = rpc_message(error)
            if "already known" in message:
                return tx_hash
            raise NodeRefused(f"The node refused the transaction: {message}.", message) from None
        except (requests.ConnectionError, requests.Timeout, ConnectionError):
            raise ChainUnreachable(
                f"Cannot reach the node at {describe(self.url)} to send a transaction."
            ) from None
        return tx_hash

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
            full["gas"] = call(self.url, "Estimating gas",
                               lambda: self.w3.eth.estimate_gas(cast(TxParams, full)))
        return self.account.sign_transaction(full)


def wait_for_receipt(w3: Web3, tx_hash: HexBytes, *, timeout: float = 60.0,
                     stop: threading.Event | None = None) -> TxReceipt:
    """The receipt of ``tx_hash``, or a ChainError after ``timeout`` seconds, or as soon as
    ``stop`` is set: a service told to stop does not wait out a chain that stopped first."""
    stop = stop or threading.Event()
    deadline = time.monotonic() + timeout
    while True:
        try:
            return w3.eth.get_transaction_receipt(tx_hash)
        except NOT_MINED_YET:
            pass
        if stop.is_set():
            raise ChainError(f"Stopped before transaction {tx_hash.to_0x_hex()} was mined; "
                             "whatever it did is read from the chain at the next start.")
        if time.monotonic() >= deadline:
            raise ChainError(
                f"Transaction {tx_hash.to_0x_hex()} was not mined within {timeout:.0f} s.")
        stop.wait(0.1)
