"""The faucet's account on the chain: its balance and the transfers it sends.

Chain access goes through :mod:`pilotchain.chain`; this module only turns its ChainErrors
into the faucet's sentences (the node's own words go to the log, never to the user).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3.types import RPCEndpoint, TxParams, Wei

from faucet.config import FaucetSettings
from faucet.errors import ChainUnavailable, FaucetEmpty, FaucetError, InvalidAddress
from pilotchain.chain import (
    ChainUnreachable,
    Fees,
    NodeRefused,
    NonceStore,
    Sender,
    call,
    connect,
    current_fees,
)
from pilotchain.errors import ChainError

log = logging.getLogger(__name__)

T = TypeVar("T")
PLAIN_TRANSFER_GAS = 21_000
# Fees are twice the base fee plus the tip (pilotchain.chain.current_fees), which stays
# includable through five full blocks in a row; re-reading them every 2 s saves each claim
# a block read without ever offering too little.
FEES_MAX_AGE = 2.0

UNREACHABLE = "The faucet cannot reach the chain right now; please try again in a minute."
REFUSED = ("The chain did not accept the faucet's transaction, so nothing was sent; "
           "please try again in a minute.")


def empty_sentence(address: str) -> str:
    """The 503 sentence when the faucet account cannot pay for a claim."""
    return (f"The faucet has run out of funds, so nothing was sent; please tell the pilot's "
            f"operators to top up the faucet account {address}.")


class FaucetWallet:
    """Balance and transfers of the faucet's account; one send at a time via ``lock``."""

    def __init__(self, settings: FaucetSettings, account: LocalAccount, *,
                 lock: AbstractContextManager[Any], nonces: NonceStore) -> None:
        self.url = settings.rpc_url
        self.expected_chain_id = settings.chain.chain_id
        self.symbol = settings.chain.currency_symbol
        # Every claim makes two calls: skip requests' proxy lookup (the node is reached
        # directly, and the lookup costs a quarter of a call's CPU).
        self.w3 = connect(settings.rpc_url, timeout=settings.rpc_timeout_seconds,
                          env_proxies=False)
        self.address: ChecksumAddress = account.address
        self.sender = Sender(self.w3, account, url=self.url, lock=lock, nonces=nonces)
        self._chain_checked = False
        self._fees: tuple[float, Fees] | None = None

    def balance(self) -> int:
        """The faucet account's balance in wei."""
        self.check_chain()
        return self._read("Reading the faucet's balance",
                          lambda: self.w3.eth.get_balance(self.address))

    def transfer(self, to: ChecksumAddress, value: int) -> str:
        """Send ``value`` wei to ``to``; returns the hash once the node has accepted it.

        Gas and fees are read before the send lock is taken, so workers read in parallel
        and hold the lock only to sign and submit.
        """
        self.check_chain()
        gas = self._gas(to, value)
        fees = self._current_fees()
        try:
            tx_hash = self.sender.send({"to": to, "value": Wei(value), "gas": gas}, fees=fees)
        except ChainError as error:
            raise self._translate(error) from None
        return tx_hash.to_0x_hex()

    def check_chain(self) -> None:
        """Refuse to serve a node of another chain than the one the page advertises."""
        if self._chain_checked:
            return
        node_chain = self._read("Reading the chain id", self.sender.chain_id)
        if node_chain != self.expected_chain_id:
            log.error("The node at %s serves chain %s, but CHAIN_ID is %s.", self.url,
                      node_chain, self.expected_chain_id)
            raise ChainUnavailable(
                f"The faucet is misconfigured: its node serves chain {node_chain}, not chain "
                f"{self.expected_chain_id} (CHAIN_ID); nothing was sent."
            )
        self._chain_checked = True

    def _current_fees(self) -> Fees:
        """EIP-1559 fees, read from the node at most every FEES_MAX_AGE seconds."""
        now = time.monotonic()
        cached = self._fees
        if cached is not None and now - cached[0] < FEES_MAX_AGE:
            return cached[1]
        fees = self._read("Reading the base fee", lambda: current_fees(self.w3))
        self._fees = (now, fees)
        return fees

    def _gas(self, to: ChecksumAddress, value: int) -> int:
        """21,000 for a wallet; an estimate for a contract, which may need more or refuse."""
        # The bare JSON-RPC call: web3's eth.get_code costs twice the CPU (argument checks
        # done already), and this runs for every claim.
        code = self._read("Reading the recipient's code", lambda: self.w3.manager.request_blocking(
            RPCEndpoint("eth_getCode"), [to, "latest"]))
        if HexBytes(code) == b"":
            return PLAIN_TRANSFER_GAS
        tx: TxParams = {"from": self.address, "to": to, "value": Wei(value)}
        try:
            return call(self.url, "Estimating gas", lambda: self.w3.eth.estimate_gas(tx))
        except NodeRefused as error:
            if "insufficient funds" in error.reason:
                raise self._translate(error) from None
            raise InvalidAddress(
                f"This address is a contract that does not accept plain transfers of "
                f"{self.symbol}; enter a wallet address instead."
            ) from None
        except ChainError as error:
            raise self._translate(error) from None

    def _read(self, action: str, fn: Callable[[], T]) -> T:
        """``fn``'s result, or the faucet's sentence for why the chain could not answer."""
        try:
            return call(self.url, action, fn)
        except ChainError as error:
            raise self._translate(error) from None

    def _translate(self, error: ChainError) -> FaucetError:
        """The user's sentence for a chain failure; the node's own words go to the log."""
        log.warning("Chain failure: %s", error)
        if isinstance(error, ChainUnreachable):
            return ChainUnavailable(UNREACHABLE)
        if isinstance(error, NodeRefused) and "insufficient funds" in error.reason:
            return FaucetEmpty(empty_sentence(self.address))
        return ChainUnavailable(REFUSED)
