"""The portal's Prometheus metrics (``/metrics`` on PORTAL_METRICS_PORT, see
:mod:`pilotchain.webmetrics`): requests, sign-ins opened and refused by reason, and how far
the index is behind the chain, read at scrape time (at most once per ``INDEX_MAX_AGE``
seconds per worker)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily

from pilotchain.chain import connect, read
from pilotchain.errors import ChainError
from pilotchain.webmetrics import AppMetrics, Cached, families
from portal.errors import PortalError
from portal.web.config import WebSettings
from portal.web.store import SignInStore

HEAD_TIMEOUT = 3.0
INDEX_MAX_AGE = 5.0
# Why a sign-in was refused (portal.web.auth tells which).
REASONS = ("bad_request", "malformed_message", "nonce_refused", "signature_refused",
           "not_registered", "chain_unavailable", "other")


class PortalMetrics:
    """What the sign-in view counts and the metrics port shows."""

    def __init__(self, settings: WebSettings, store: SignInStore) -> None:
        self.settings = settings
        self.store = store
        self.w3 = connect(settings.index.rpc_url, timeout=HEAD_TIMEOUT, env_proxies=False)
        self.index = Cached(self._read_index, INDEX_MAX_AGE)
        self.app = AppMetrics(settings.metrics_port, [families(self.collect)])
        self.sign_ins = self.app.counter(
            "pilotchain_portal_sign_ins_total", "Sign-ins that opened a session")
        self.refused = self.app.counter(
            "pilotchain_portal_sign_ins_refused_total",
            "Sign-ins refused (nobody signed in), by reason", ("reason",),
            [(reason,) for reason in REASONS])

    def sign_in_refused(self, reason: str) -> None:
        self.refused.labels(reason if reason in REASONS else "other").inc()

    def _read_index(self) -> tuple[int | None, int | None]:
        """The indexer's cursor (its last indexed block) and the node's head, each None when
        it cannot be read now."""
        try:
            cursor = self.store.db.cursor()
            indexed = None if cursor is None else cursor.block_number
        except PortalError:
            indexed = None
        url = self.settings.index.rpc_url
        try:
            head: int | None = read(url, "Reading the head", lambda: self.w3.eth.block_number)
        except ChainError:
            head = None
        return indexed, head

    def collect(self) -> Iterator[GaugeMetricFamily]:
        indexed, head = self.index.get()
        yield GaugeMetricFamily("pilotchain_chain_connected",
                                "1 while the portal's node answers", value=int(head is not None))
        yield GaugeMetricFamily("pilotchain_portal_index_connected",
                                "1 while the index has a cursor the portal can read",
                                value=int(indexed is not None))
        if head is not None:
            yield GaugeMetricFamily("pilotchain_chain_head_block",
                                    "The newest block of the portal's node", value=head)
        if indexed is not None:
            yield GaugeMetricFamily("pilotchain_portal_indexed_block",
                                    "The newest block the indexer has taken in", value=indexed)
        if head is not None and indexed is not None:
            yield GaugeMetricFamily("pilotchain_portal_index_lag_blocks",
                                    "Blocks the index is behind the node's head (at least "
                                    "PORTAL_CONFIRMATIONS while the indexer keeps up)",
                                    value=max(0, head - indexed))
