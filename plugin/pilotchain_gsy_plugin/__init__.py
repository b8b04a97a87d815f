"""gsy-e's ledger hook, pointed at PilotChain: every trade goes to a Redis Stream.

gsy-e run with ``--enable-bc`` builds one ``SubstrateBlockchainInterface(market_id,
simulation_id)`` per market, imported from ``gsy_dex.trade_store.market_interface`` (the
``gsy_dex`` shim of this distribution, ``pilotchain-gsy-plugin``, re-exports the class below).
``track_trade_event`` hands the trade to a background publisher and returns at once; every
other call answers exactly as gsy-e's own ``NonBlockchainInterface``, so a simulation runs the
same with or without it.

Delivery: one publisher thread per process appends events, in order, with pipelined XADDs.
While Redis is unreachable the events wait in memory, in order, and go out when it is back.
The buffer is bounded (``BRIDGE_PLUGIN_BUFFER`` events, about 1.5 KB each) so a long outage
cannot exhaust gsy-e's memory; beyond it, events are appended to an overflow file in the
recording format (``BRIDGE_PLUGIN_OVERFLOW_FILE``), to be published with ``./scripts/replay``,
and the log says so. If even that file cannot be written, each event is logged in full at
ERROR level: a trade is never dropped silently. At exit the publisher gets a few seconds to
deliver what is left and writes the rest to the overflow file.

A reply lost after Redis has applied an XADD makes the publisher send that event again: the
bridge and the contract settle a trade id once however often it arrives.

Every leg, also those gsy-e does not pass to the hook: in two-sided markets (spot, settlement,
future, forward), a bid that an inter-area agent forwarded and that matched in another market
comes back to its source market as ``TwoSidedMarket.accept_bid(..., offer=None)``, a "chain
trade" that gsy-e appends to the market's ``trades`` and exports but never hands to
``track_trade_event`` (gsy-e ab358e7, ``models/market/two_sided.py``; docs/bridge.md has the
report for Grid Singularity). The first interface gsy-e builds wraps ``accept_bid`` of every
two-sided market class it has (:func:`report_chain_legs`, again for classes defined later) so
that each such trade goes to the same market's interface, once: a trade id already handed to
the hook recently (say, by a gsy-e that reports these legs itself) is not handed again.

Only the standard library and redis-py here: this package is installed into gsy-e's
environment (``scripts/install-plugin``), apart from the bridge, so it shares no code with it.
The constants both sides must agree on are copied; a test holds them equal.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

log = logging.getLogger("pilotchain.gsy_plugin")

# The bridge's copies: bridge.events.EVENT_FIELD, bridge.config.DEFAULT_REDIS_URL and
# DEFAULT_STREAM (tests/test_bridge_plugin.py holds them equal).
EVENT_FIELD = "event"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_STREAM = "pilotchain:trades"
DELIVERY_CHUNK = 500
DELIVERY_LINGER = 0.05
EXIT_GRACE_SECONDS = 5.0
# Trade ids the hook took recently: enough to span one accept_bid and whatever gsy-e reports
# inside it, so a leg is handed to the stream once however many wrappers see it.
RECENT_TRADE_IDS = 4096


@dataclass(frozen=True)
class PluginSettings:
    """The plug-in's settings; gsy-e constructs it, so they come from the environment."""

    redis_url: str = DEFAULT_REDIS_URL
    stream: str = DEFAULT_STREAM
    buffer_limit: int = 200_000
    overflow_file: Path = Path("pilotchain-unpublished-trades.jsonl")


def plugin_settings(environ: Mapping[str, str] | None = None) -> PluginSettings:
    """Read REDIS_URL, BRIDGE_STREAM, BRIDGE_PLUGIN_BUFFER, BRIDGE_PLUGIN_OVERFLOW_FILE.

    A malformed number falls back to the default with a warning: the plug-in must never
    stop gsy-e.
    """
    env = os.environ if environ is None else environ
    d = PluginSettings()
    limit = d.buffer_limit
    raw = env.get("BRIDGE_PLUGIN_BUFFER", "").strip()
    if raw:
        try:
            limit = max(1, int(raw))
        except ValueError:
            log.warning("BRIDGE_PLUGIN_BUFFER must be a whole number, not %r; using %d.",
                        raw, limit)
    return PluginSettings(
        redis_url=env.get("REDIS_URL", "").strip() or d.redis_url,
        stream=env.get("BRIDGE_STREAM", "").strip() or d.stream,
        buffer_limit=limit,
        overflow_file=Path(env.get("BRIDGE_PLUGIN_OVERFLOW_FILE", "").strip()
                           or d.overflow_file),
    )


class RecentIds:
    """The last ``size`` trade ids the hook took, to hand each one to the stream once."""

    def __init__(self, size: int = RECENT_TRADE_IDS) -> None:
        self._order: deque[Any] = deque()
        self._seen: set[Any] = set()
        self._size = size
        self._lock = threading.Lock()

    def first_time(self, trade_id: Any) -> bool:
        """True unless ``trade_id`` was taken recently; a trade without an id always is."""
        if trade_id is None:
            return True
        with self._lock:
            if trade_id in self._seen:
                return False
            self._seen.add(trade_id)
            self._order.append(trade_id)
            if len(self._order) > self._size:
                self._seen.discard(self._order.popleft())
            return True


class TradePublisher:
    """An ordered, bounded buffer of events and the thread that appends them to Redis."""

    def __init__(self, settings: PluginSettings) -> None:
        self.settings = settings
        self._client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1,
                                            socket_timeout=2)
        self._buffer: deque[dict[str, Any]] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._down_since: float | None = None
        self._overflowed = 0
        self._closing = False
        self._idle = False
        self.recent = RecentIds()  # the trade ids the hook handed over lately

    # -- gsy-e's thread ----------------------------------------------------------------

    def publish(self, event: dict[str, Any]) -> None:
        """Queue one event; O(1), never blocks on Redis."""
        self._ensure_thread()
        if self._closing or len(self._buffer) >= self.settings.buffer_limit:
            with self._wake:
                self._overflow([event])
            return
        self._buffer.append(event)  # deque.append is atomic: no lock on the hot path
        if self._idle:
            with self._wake:
                self._wake.notify()

    def pending(self) -> int:
        """Events not yet confirmed by Redis."""
        return len(self._buffer)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the buffer to empty; True if it did."""
        deadline = time.monotonic() + timeout
        with self._wake:
            self._wake.notify()
        while self._buffer and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._buffer

    def _ensure_thread(self) -> None:
        # After a fork the child has the buffer but not the thread: start its own.
        if self._thread is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._deliver_forever,
                                            name="pilotchain-trade-publisher", daemon=True)
            self._thread.start()

    # -- the publisher thread ----------------------------------------------------------

    def _deliver_forever(self) -> None:
        delay = 0.0
        while True:
            with self._wake:
                while not self._buffer and not self._closing:
                    self._idle = True
                    self._wake.wait(1.0)
                self._idle = False
                if self._closing and not self._buffer:
                    return
            if len(self._buffer) < DELIVERY_CHUNK:
                # Let a burst gather: fewer, larger appends cost gsy-e's thread less.
                time.sleep(DELIVERY_LINGER)
            with self._wake:
                chunk = [self._buffer[i] for i in range(min(DELIVERY_CHUNK, len(self._buffer)))]
            try:
                self._append(chunk)
            except redis.RedisError as error:
                delay = min(5.0, max(0.1, delay * 2))
                self._note_down(error)
                time.sleep(delay)
                continue
            except Exception:  # never let the thread die: gsy-e would silently lose trades
                log.exception("Unexpected error while publishing trades; retrying.")
                time.sleep(1.0)
                continue
            delay = 0.0
            with self._wake:
                for _ in chunk:
                    self._buffer.popleft()
            self._note_up()

    def _append(self, chunk: list[dict[str, Any]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for event in chunk:
            pipe.xadd(self.settings.stream, {EVENT_FIELD: json.dumps(event, default=str)})
        pipe.execute()

    def _note_down(self, error: Exception) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("Redis at %s is unreachable (%s); keeping trades in order until it is "
                        "back (%d waiting).", self.settings.redis_url, error, len(self._buffer))

    def _note_up(self) -> None:
        if self._down_since is not None:
            log.warning("Redis at %s is back after %.1f s; buffered trades delivered.",
                        self.settings.redis_url, time.monotonic() - self._down_since)
            self._down_since = None

    # -- overflow and exit -------------------------------------------------------------

    def _overflow(self, events: list[dict[str, Any]]) -> None:
        """Events that do not fit the buffer: to the overflow file, or in full to the log."""
        path = self.settings.overflow_file
        try:
            with path.open("a", encoding="utf-8") as out:
                for event in events:
                    out.write(json.dumps(event, default=str) + "\n")
        except OSError as error:
            for event in events:
                log.error("Trade NOT published (buffer full, overflow file %s unusable: %s): "
                          "%s", path, error, json.dumps(event, default=str))
            return
        if self._overflowed == 0:
            log.error("The trade buffer is full (%d trades) while Redis at %s is unreachable; "
                      "further trades go to %s. Publish them with ./scripts/replay %s once "
                      "Redis is back.", self.settings.buffer_limit, self.settings.redis_url,
                      path.resolve(), path.resolve())
        self._overflowed += len(events)

    def close(self, timeout: float = EXIT_GRACE_SECONDS) -> None:
        """At exit: deliver what Redis will take within ``timeout``, save the rest."""
        if self._thread is None or not self._thread.is_alive():
            return
        if self.flush(timeout):
            return
        with self._wake:
            self._closing = True
            left = []
            while self._buffer:
                left.append(self._buffer.popleft())
            self._wake.notify()
            self._overflow(left)


_publisher: TradePublisher | None = None
_publisher_lock = threading.Lock()


def shared_publisher() -> TradePublisher:
    """The process's one publisher (gsy-e makes an interface per market; they share it,
    which keeps all trades in one order)."""
    global _publisher
    with _publisher_lock:
        if _publisher is None:
            _publisher = TradePublisher(plugin_settings())
            atexit.register(_publisher.close)
        return _publisher


class SubstrateBlockchainInterface:
    """What gsy-e's ``blockchain_interface_factory`` builds with ``--enable-bc``."""

    def __init__(self, market_id: Any, simulation_id: Any = None) -> None:
        self.market_id = market_id
        self.simulation_id = simulation_id
        self._publisher = shared_publisher()
        _hook_gsy_e()

    def create_new_offer(self, energy: Any, price: Any, seller: Any) -> str:
        return str(uuid.uuid4())

    def cancel_offer(self, offer: Any) -> None:
        pass

    def change_offer(self, offer: Any, original_offer: Any, residual_offer: Any) -> None:
        pass

    def handle_blockchain_trade_event(self, offer: Any, buyer: Any, original_offer: Any,
                                      residual_offer: Any) -> tuple[str, Any]:
        return str(uuid.uuid4()), residual_offer

    def track_trade_event(self, time_slot: Any, trade: Any) -> None:
        """Queue the trade for the stream; never raises into gsy-e."""
        try:
            if not self._publisher.recent.first_time(getattr(trade, "id", None)):
                return
            self._publisher.publish({
                "market_id": _text(self.market_id),
                "simulation_id": _text(self.simulation_id),
                "time_slot": _text(time_slot),
                "trade": trade.serializable_dict(),
            })
        except Exception:
            log.exception("Could not queue trade %s of market %s for PilotChain.",
                          getattr(trade, "id", "?"), self.market_id)

    def bc_listener(self) -> None:
        pass


# --- the legs gsy-e does not report ------------------------------------------------------

_WRAPPED = "__pilotchain_reports_chain_legs__"
_hook_lock = threading.Lock()
_not_gsy_e = False  # gsy-e is not importable here: do not look again for every interface


def report_chain_legs(two_sided_market: type) -> list[str]:
    """Wrap ``accept_bid`` of ``two_sided_market`` and of each subclass that defines its own,
    so that the chain legs it makes (no offer) reach the market's ledger interface; returns
    the names of the classes wrapped now (none the second time)."""
    wrapped = []
    with _hook_lock:
        for cls in _with_subclasses(two_sided_market):
            own = cls.__dict__.get("accept_bid")
            if own is None or getattr(own, _WRAPPED, False):
                continue
            cls.accept_bid = _reporting(own)  # type: ignore[attr-defined]
            wrapped.append(cls.__qualname__)
    return wrapped


def _with_subclasses(cls: type) -> Iterator[type]:
    yield cls
    for sub in cls.__subclasses__():
        yield from _with_subclasses(sub)


def _reporting(accept_bid: Callable[..., Any]) -> Callable[..., Any]:
    offer_of = _offer_argument(accept_bid)

    @functools.wraps(accept_bid)
    def accept_bid_and_report_leg(market: Any, *args: Any, **kwargs: Any) -> Any:
        trade = accept_bid(market, *args, **kwargs)
        # gsy-e's own test (two_sided.py, ``if not offer``): a bid accepted without an offer
        # is a chain leg; with one, accept_offer reported the match's offer trade.
        if not offer_of(args, kwargs, trade):
            try:
                bc = getattr(market, "bc_interface", None)
                if isinstance(bc, SubstrateBlockchainInterface):
                    bc.track_trade_event(market.time_slot, trade)
            except Exception:  # never into gsy-e: its trade stands whatever the ledger does
                log.exception("Could not report the chain leg %s of market %s to PilotChain.",
                              getattr(trade, "id", "?"), getattr(market, "name", "?"))
        return trade

    setattr(accept_bid_and_report_leg, _WRAPPED, True)
    return accept_bid_and_report_leg


def _offer_argument(accept_bid: Callable[..., Any]
                    ) -> Callable[[tuple[Any, ...], dict[str, Any], Any], Any]:
    """Where a call of ``accept_bid(self, bid, ..., offer=...)`` carries its offer: found once
    in the signature (through gsy-e's lock decorator, which keeps ``__wrapped__``) and read
    per call without binding every argument. An override taking ``*args, **kwargs`` names no
    offer: then the trade's own record of it (gsy-framework's ``match_details``) says."""
    parameters = list(inspect.signature(accept_bid).parameters.values())
    names = [parameter.name for parameter in parameters]
    if "offer" not in names:
        def offer_in_trade(args: tuple[Any, ...], kwargs: dict[str, Any], trade: Any) -> Any:
            if "offer" in kwargs:
                return kwargs["offer"]
            return (getattr(trade, "match_details", None) or {}).get("offer")
        return offer_in_trade
    position = names.index("offer") - 1  # args come without self
    default = parameters[position + 1].default
    default = None if default is inspect.Parameter.empty else default

    def offer_argument(args: tuple[Any, ...], kwargs: dict[str, Any], trade: Any) -> Any:
        if "offer" in kwargs:
            return kwargs["offer"]
        return args[position] if len(args) > position else default

    return offer_argument


def _hook_gsy_e() -> None:
    """Report gsy-e's chain legs, if this is gsy-e: a cheap no-op after the first time for
    each class (gsy-e builds an interface per market, and every market class it uses is
    defined before its first market)."""
    global _not_gsy_e
    if _not_gsy_e:
        return
    try:
        from gsy_e.models.market.two_sided import TwoSidedMarket
    except ImportError:
        _not_gsy_e = True
        return
    # gsy-e builds the interfaces when the areas activate, maybe before its other market
    # kinds are imported: import them now, so a subclass with its own accept_bid is seen.
    for kind in ("settlement", "future", "forward"):
        try:
            __import__(f"gsy_e.models.market.{kind}")
        except Exception:  # a gsy-e without that market kind
            pass
    try:
        wrapped = report_chain_legs(TwoSidedMarket)
    except Exception:
        log.exception("Could not hook gsy-e's two-sided markets; forwarded bids' chain legs "
                      "will be missing from PilotChain.")
        return
    if wrapped:
        log.info("PilotChain reports the chain legs of forwarded bids in %s (gsy-e does not "
                 "pass them to its ledger hook).", ", ".join(wrapped))


def _text(value: Any) -> str | None:
    """As the recordings show ids and slots: ``str()`` (a time: '2026-06-21 00:00:00+00:00')."""
    return None if value is None else str(value)
