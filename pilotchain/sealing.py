"""Who seals, as Prometheus metrics: ``pilotchain network exporter``.

Read at each scrape through one node (its IPC socket: the clique namespace is not served over
HTTP): the head and its age, the signers, which of them sealed among the last 2N+2 blocks (in
turn each seals one block in N, so one missing from twice that many is not taking part), the
last block each sealed, and how many signers a majority needs. The alerting rules
(monitoring/alerts.yml) turn these into "a signer stopped sealing", "one more signer down halts
the chain" and "the chain halted".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from eth_utils.address import to_checksum_address
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from web3.types import RPCEndpoint

from pilotchain.chain import call, connect
from pilotchain.errors import ChainError, ConfigError
from pilotchain.netstatus import last_sealed, not_sealing, recent_headers

# Blocks read back at each scrape for each signer's last sealed block.
WINDOW = 64


@dataclass(frozen=True)
class Sealing:
    """One reading of the chain's sealing."""

    head: int
    head_age: float
    signers: list[str]
    silent: list[str]  # signers with no block among the last 2N+2
    last_sealed: dict[str, int]

    @property
    def needed(self) -> int:
        """Signers a majority needs: with fewer sealing, Clique stops."""
        return len(self.signers) // 2 + 1


def read_sealing(url: str, now: Callable[[], float] = time.time) -> Sealing:
    """The sealing as the node at ``url`` sees it; ChainError if it does not answer."""
    w3 = connect(url)
    head_block = call(url, "Reading the head", lambda: w3.eth.get_block("latest"))
    head = int(head_block["number"])
    signers: list[str] = [to_checksum_address(s) for s in call(
        url, "Reading the signers",
        lambda: w3.manager.request_blocking(RPCEndpoint("clique_getSigners"), []))]
    headers = recent_headers(w3, url, head, max(WINDOW, 4 * len(signers) + 4))
    return Sealing(head, now() - int(head_block["timestamp"]), signers,
                   not_sealing(signers, headers, head),
                   {signer: header.number for signer, header in last_sealed(headers).items()})


class SealingCollector:
    """Reads the sealing at each scrape; a node that does not answer is a 0 of
    ``pilotchain_node_reachable`` (and nothing else), not a failed scrape."""

    def __init__(self, url: str) -> None:
        self.url = url

    def collect(self) -> Iterator[Metric]:
        reachable = GaugeMetricFamily("pilotchain_node_reachable",
                                      "1 while the node the exporter reads answers.")
        try:
            sealing = read_sealing(self.url)
        except ChainError:
            reachable.add_metric([], 0.0)
            yield reachable
            return
        reachable.add_metric([], 1.0)
        yield reachable
        yield GaugeMetricFamily("pilotchain_chain_head_block", "The node's newest block.",
                                value=sealing.head)
        yield GaugeMetricFamily("pilotchain_chain_head_age_seconds",
                                "Seconds since the newest block's timestamp.",
                                value=max(0.0, sealing.head_age))
        yield GaugeMetricFamily("pilotchain_clique_signers", "Clique signers now.",
                                value=len(sealing.signers))
        yield GaugeMetricFamily("pilotchain_clique_signers_needed",
                                "Signers that must seal for the chain to go on (a majority).",
                                value=sealing.needed)
        yield GaugeMetricFamily("pilotchain_clique_signers_sealing",
                                "Signers with a block among the last 2N+2.",
                                value=len(sealing.signers) - len(sealing.silent))
        taking_part = GaugeMetricFamily(
            "pilotchain_clique_signer_sealing",
            "1 if the signer sealed a block among the last 2N+2, 0 if not.",
            labels=["signer"])
        last = GaugeMetricFamily("pilotchain_clique_signer_last_sealed_block",
                                 "The newest block the signer sealed (among those read).",
                                 labels=["signer"])
        for signer in sealing.signers:
            taking_part.add_metric([signer], 0.0 if signer in sealing.silent else 1.0)
            if signer in sealing.last_sealed:
                last.add_metric([signer], sealing.last_sealed[signer])
        yield taking_part
        yield last


def serve_exporter(url: str, host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    """``/metrics`` of the sealing read through ``url``, on ``host:port``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SealingCollector(url))
    try:
        return start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise ConfigError(f"The exporter cannot listen on {host}:{port} ({error.strerror}); "
                          "choose another --listen.") from None
