"""The service layer shared by the page and the JSON API: claim funds, describe the faucet.

A claim is: check the address, reserve the address's and the IP's quota, send, and give
the quota back if the send failed, so the user can retry at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from limits import RateLimitItem

from faucet.addresses import parse_address
from faucet.config import WEI_PER_UNIT, FaucetSettings
from faucet.errors import FaucetError, InvalidAddress
from faucet.limits import ClaimLimits, describe_limit, describe_period
from faucet.metrics import FaucetMetrics
from faucet.wallet import FaucetWallet

log = logging.getLogger(__name__)


def format_units(wei: int) -> str:
    """Wei as whole units without trailing zeros: 10**18 -> "1", 5 * 10**17 -> "0.5"."""
    text = format(Decimal(wei) / WEI_PER_UNIT, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(frozen=True)
class Claim:
    """A transfer the node has accepted (not necessarily mined yet)."""

    address: str
    amount_wei: int
    symbol: str
    tx_hash: str
    tx_url: str | None

    @property
    def amount(self) -> str:
        return format_units(self.amount_wei)

    @property
    def message(self) -> str:
        return f"Sent {self.amount} {self.symbol} to {self.address}."


@dataclass(frozen=True)
class FaucetInfo:
    """What the page and ``GET /api/info`` show: the network and the faucet's terms."""

    network_name: str
    chain_id: int
    symbol: str
    rpc_url: str
    explorer_url: str | None
    faucet_address: str
    balance_wei: int | None
    amount_wei: int
    address_limit: str
    ip_limit: str
    wait: str

    @property
    def balance(self) -> str | None:
        return None if self.balance_wei is None else format_units(self.balance_wei)

    @property
    def amount(self) -> str:
        return format_units(self.amount_wei)


class ClaimService:
    """Claims and faucet information, for both blueprints."""

    def __init__(self, settings: FaucetSettings, wallet: FaucetWallet,
                 limits: ClaimLimits, metrics: FaucetMetrics) -> None:
        self.settings = settings
        self.wallet = wallet
        self.limits = limits
        self.metrics = metrics

    def claim(self, raw_address: object, client_ip: str) -> Claim:
        """Send the configured amount to ``raw_address`` within the limits, or raise a
        FaucetError whose sentence says why not; counted either way."""
        try:
            claim = self._claim(raw_address, client_ip)
        except FaucetError as error:
            self.metrics.claim_refused(error)
            raise
        self.metrics.granted.inc()
        return claim

    def _claim(self, raw_address: object, client_ip: str) -> Claim:
        address = parse_address(raw_address)
        if address == self.wallet.address:
            raise InvalidAddress("That is the faucet's own address; enter your wallet address.")
        reservation = self.limits.reserve(address, client_ip)
        sent = False
        try:
            tx_hash = self.wallet.transfer(address, self.settings.amount_wei)
            sent = True
        finally:
            if not sent:
                self.limits.refund(reservation)
        log.info("Sent %s wei to %s for %s: %s", self.settings.amount_wei, address, client_ip,
                 tx_hash)
        return Claim(address, self.settings.amount_wei, self.settings.chain.currency_symbol,
                     tx_hash, self.tx_url(tx_hash))

    def info(self) -> FaucetInfo:
        """The terms with the faucet's current balance (raises if the chain is down)."""
        return replace(self.terms(), balance_wei=self.wallet.balance())

    def terms(self) -> FaucetInfo:
        """The network and the faucet's terms, without asking the chain anything."""
        settings = self.settings
        return FaucetInfo(
            network_name=settings.chain.network_name,
            chain_id=settings.chain.chain_id,
            symbol=settings.chain.currency_symbol,
            rpc_url=settings.public_rpc_url,
            explorer_url=self.explorer_url,
            faucet_address=self.wallet.address,
            balance_wei=None,
            amount_wei=settings.amount_wei,
            address_limit=describe_limit_list(self.limits.address_limits),
            ip_limit=describe_limit_list(self.limits.ip_limits),
            wait=describe_period(self.limits.address_limits),
        )

    @property
    def explorer_url(self) -> str | None:
        url = self.settings.chain.explorer_url.strip().rstrip("/")
        return url or None

    def tx_url(self, tx_hash: str) -> str | None:
        """Where the explorer (Blockscout) shows ``tx_hash``."""
        return f"{self.explorer_url}/tx/{tx_hash}" if self.explorer_url else None


def describe_limit_list(items: Sequence[RateLimitItem]) -> str:
    """Several limits in words: "5 claims an hour and 20 claims a day"."""
    return " and ".join(describe_limit(item) for item in items)
