"""The closer's loop: a pass of :class:`pilotchain.closing.SlotCloser` every interval.

A pass that fails because the node is away or refuses (no funds, say) is logged with its
sentence and retried at the next interval; /health answers 503 with that sentence meanwhile.
What cannot pass by waiting (no deployment record, no key) stops the process at start.
"""

from __future__ import annotations

import logging
import threading
import time

from closer.config import CloserSettings
from closer.errors import CloserConfigError
from pilotchain.chain import Sender
from pilotchain.closing import SlotCloser
from pilotchain.errors import ChainError
from pilotchain.keys import KeyStore
from pilotchain.operator import OperatorError, SettlementClient
from worker.metrics import BATCHES, CHAIN, LAST_BLOCK, Counter, Gauge, Metrics

log = logging.getLogger("closer")
# What the closer measures: its passes and what they closed, the head it has seen and its link
# to the chain (it reads no stream, so it has no Redis to report).
CLOSER_METRICS = (
    Counter("passes", "pilotchain_closer_passes",
            "Passes of the slot closer over the due slots."),
    Counter("balanced", "pilotchain_slots_balanced", "Metered slots closed and balanced."),
    Counter("unmetered", "pilotchain_slots_unmetered",
            "Slots closed without a meter's readings."),
    BATCHES,
    LAST_BLOCK,
    Gauge("open_due_slots", "pilotchain_slots_due_open",
          "Slots past their deadline the closer has not closed yet."),
    Gauge("last_pass", "pilotchain_closer_last_pass_timestamp_seconds",
          "When the slot closer last finished a pass (Unix time)."),
    CHAIN,
)


class Closer:
    """Closes due slots every ``settings.interval`` seconds until ``stop`` is set."""

    def __init__(self, settings: CloserSettings, metrics: Metrics | None = None,
                 stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.metrics.declare(*CLOSER_METRICS)
        self.stop = stop or threading.Event()

    def run(self) -> None:
        closer = self._start()
        self.metrics.set(state="running", chain="ok")
        log.info("Closing due slots of Settlement %s every %.0f s as %s.",
                 closer.client.contract.address, self.settings.interval, closer.sender.address)
        while not self.stop.is_set():
            began = time.monotonic()
            self.pass_once(closer)
            self.stop.wait(max(0.0, self.settings.interval - (time.monotonic() - began)))
        log.info("Stopped.")

    def _start(self) -> SlotCloser:
        """The closer, once the chain answers; a setting that cannot work raises."""
        role = KeyStore(self.settings.chain.keys_dir).role(self.settings.key_role)
        account = role.unlock()
        while True:
            try:
                client = SettlementClient.open(self.settings.chain, self.settings.key_role)
                return SlotCloser(client, Sender(client.w3, account, url=client.url),
                                  stop=self.stop)
            except OperatorError as error:
                raise CloserConfigError(str(error)) from None
            except ChainError as error:
                self.metrics.set(state="waiting", chain="unreachable", problem=str(error))
                log.warning("%s Retrying in %.0f s.", error, self.settings.interval)
                if self.stop.wait(self.settings.interval):
                    raise CloserConfigError("Stopped before the chain answered.") from None

    def pass_once(self, closer: SlotCloser) -> None:
        """One pass; its failure is reported, not raised."""
        try:
            result = closer.close_due()
        except (ChainError, OperatorError) as error:
            if self.stop.is_set():  # told to stop while it waited: not a failure
                log.info("%s", error)
                return
            self.metrics.set(state="retrying", problem=str(error))
            log.warning("Closing slots failed: %s Retrying in %.0f s.", error,
                        self.settings.interval)
            return
        self.metrics.add("passes")
        self.metrics.add("balanced", result.balanced)
        self.metrics.add("unmetered", result.unmetered)
        self.metrics.add("batches", result.transactions)
        self.metrics.set(state="running", chain="ok", problem=None, last_block=closer.cursor,
                         open_due_slots=result.remaining, last_pass=time.time())
        if result.closed:
            log.info("Closed %d slots: %d balanced, %d unmetered, in %d transaction(s).",
                     result.closed, result.balanced, result.unmetered, result.transactions)
