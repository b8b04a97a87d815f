"""The faucet's Prometheus metrics (``/metrics`` on FAUCET_METRICS_PORT, see
:mod:`pilotchain.webmetrics`): requests, claims granted and refused by reason, and the faucet
account's balance read from the node at scrape time (at most once per
``BALANCE_MAX_AGE`` seconds per worker)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from eth_typing import ChecksumAddress
from prometheus_client.core import GaugeMetricFamily

from faucet.config import WEI_PER_UNIT, FaucetSettings
from faucet.errors import (
    ChainUnavailable,
    FaucetEmpty,
    FaucetError,
    InvalidAddress,
    RateLimited,
    StoreUnavailable,
)
from pilotchain.chain import connect, read
from pilotchain.errors import ChainError
from pilotchain.webmetrics import AppMetrics, Cached, families

# A scrape never waits long for the node, and reads it at most this often per worker.
BALANCE_TIMEOUT = 3.0
BALANCE_MAX_AGE = 5.0
# Why a claim was refused, most specific first; anything else is "other".
REASONS: tuple[tuple[type[FaucetError], str], ...] = (
    (InvalidAddress, "invalid_address"),
    (RateLimited, "rate_limited"),
    (FaucetEmpty, "empty"),
    (ChainUnavailable, "chain_unavailable"),
    (StoreUnavailable, "store_unavailable"),
)


def reason_of(error: FaucetError) -> str:
    """The ``reason`` label of a refused claim."""
    return next((label for kind, label in REASONS if isinstance(error, kind)), "other")


class FaucetMetrics:
    """What the claim service counts and the metrics port shows."""

    def __init__(self, settings: FaucetSettings, address: ChecksumAddress) -> None:
        self.settings = settings
        self.address = address
        w3 = connect(settings.rpc_url, timeout=BALANCE_TIMEOUT, env_proxies=False)
        self.balance = Cached(
            lambda: self._read_balance(w3), BALANCE_MAX_AGE)
        self.app = AppMetrics(settings.metrics_port, [families(self.collect)])
        self.granted = self.app.counter(
            "pilotchain_faucet_claims_granted_total",
            "Claims the node accepted a transfer for")
        self.refused = self.app.counter(
            "pilotchain_faucet_claims_refused_total",
            "Claims refused (nothing sent), by reason", ("reason",),
            [(label,) for _, label in REASONS] + [("other",)])

    def _read_balance(self, w3: Any) -> int | None:
        try:
            balance: int = read(self.settings.rpc_url, "Reading the faucet's balance",
                                lambda: w3.eth.get_balance(self.address))
        except ChainError:
            return None
        return balance

    def claim_refused(self, error: FaucetError) -> None:
        self.refused.labels(reason_of(error)).inc()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The balance as the node has it now, whether the node answered, and the alert's
        threshold (FAUCET_LOW_BALANCE)."""
        wei = self.balance.get()
        yield GaugeMetricFamily("pilotchain_chain_connected",
                                "1 while the faucet's node answers", value=int(wei is not None))
        if wei is not None:
            yield GaugeMetricFamily("pilotchain_faucet_balance_ether",
                                    "The faucet account's balance in whole units (ether)",
                                    value=wei / WEI_PER_UNIT)
        yield GaugeMetricFamily("pilotchain_faucet_low_balance_ether",
                                "Below this balance PilotChainFaucetBalanceLow fires "
                                "(FAUCET_LOW_BALANCE)",
                                value=self.settings.low_balance_wei / WEI_PER_UNIT)
