"""Names for the uuids: what gsy-e calls each participant and area, and what the grid
operator chose to call them instead.

The chain holds no names (a trade carries bytes32 ids only), but every trade event gsy-e's
plug-in writes to the bridge's stream names its buyer and seller (``{"name", "uuid"}``, the
party in that market, and ``origin``/``origin_uuid``, the device). The portal reads that
stream (``BRIDGE_STREAM``, in the Redis it reads the dead letters from) from where it last
stopped, with XRANGE and no consumer group, so it never holds up the bridge's trimming:
entries the bridge trimmed before the portal saw them cost nothing lasting, as every
participant's name comes again with each of its trades. A market is a gsy-e area, whose uuid
is its id, so it is named by the same table when the area trades as a party; the operator
names the rest (the top area's market, say) and may correct any name (``display_name``
wins over ``gsy_name``; cleared, gsy-e's name shows again).

What a participant may see of these names is decided at the edge (``portal.web.api``): its
own, its counterparties' in its own trades and its markets', nothing more.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from pilotchain.safejson import JsonBounds, UnsafeJson, load_bounded
from portal.db import Database

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 80
EVENT_FIELD = b"event"
# Entries read per XRANGE, and at most this many rounds per refresh (a refresh bounds its
# time; the next one goes on from there).
BATCH = 1000
MAX_ROUNDS = 20
# Seconds before a process looks at the stream again after Redis failed it.
RETRY_AFTER_FAILURE = 60.0
NAME_BOUNDS = JsonBounds(
    max_digits=40, max_depth=32, max_marks=100_000,
    digits_reason="no field of a trade takes more than 40.",
    fraction_reason="no amount of a trade is written that long.",
    constant_reason="amounts of a trade are finite numbers.",
    depth_reason="a gsy-e trade event is a few objects deep.",
    marks_reason="that is not one gsy-e trade event.",
    reader="the portal's name reader")


def clean_name(raw: object) -> str | None:
    """A name fit to show: text, printable, trimmed, at most MAX_NAME_CHARS; else None."""
    if not isinstance(raw, str):
        return None
    text = " ".join(raw.split())
    if not text or len(text) > MAX_NAME_CHARS or not text.isprintable():
        return None
    return text


def _uuid_text(raw: object) -> str | None:
    try:
        return str(uuid.UUID(str(raw))) if isinstance(raw, str) else None
    except ValueError:
        return None


def names_in_event(event: object) -> dict[str, str]:
    """The ``{uuid: name}`` pairs one gsy-e trade event gives: its buyer's and seller's (the
    parties in the market) and their origins' (the devices)."""
    found: dict[str, str] = {}
    trade = event.get("trade") if isinstance(event, Mapping) else None
    if not isinstance(trade, Mapping):
        return found
    for side in ("seller", "buyer"):
        party = trade.get(side)
        if not isinstance(party, Mapping):
            continue
        for id_key, name_key in (("origin_uuid", "origin"), ("uuid", "name")):
            pid, name = _uuid_text(party.get(id_key)), clean_name(party.get(name_key))
            if pid is not None and name is not None:
                found[pid] = name
    return found


def save_gsy_names(db: Database, names: Mapping[str, str]) -> None:
    """Record gsy-e's names (the operator's own names are kept)."""
    if not names:
        return
    with db.writing() as statements:
        for pid, name in sorted(names.items()):
            statements.execute(
                "INSERT INTO names (id, gsy_name) VALUES (?, ?) ON CONFLICT (id) "
                "DO UPDATE SET gsy_name = excluded.gsy_name", (pid, name))


def set_display_name(db: Database, pid: str, name: str | None) -> None:
    """The operator's name for ``pid``; None clears it (gsy-e's shows again)."""
    db.execute("INSERT INTO names (id, display_name) VALUES (?, ?) ON CONFLICT (id) "
               "DO UPDATE SET display_name = excluded.display_name", (pid, name))


def names_of(db: Database, ids: Iterable[str]) -> dict[str, dict[str, str | None]]:
    """``{id: {"name", "gsy_name", "display_name"}}`` for those of ``ids`` that have a name;
    ``name`` is what to show (the operator's, else gsy-e's)."""
    wanted = sorted({str(i) for i in ids})
    found: dict[str, dict[str, str | None]] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        marks = ", ".join("?" * len(chunk))
        for pid, gsy, display in db.fetch(
                f"SELECT id, gsy_name, display_name FROM names WHERE id IN ({marks})", chunk):
            if gsy is None and display is None:
                continue
            found[str(pid)] = {"name": display or gsy, "gsy_name": gsy,
                               "display_name": display}
    return found


def shown_names(db: Database, ids: Iterable[str]) -> dict[str, str]:
    """``{id: name to show}`` for those of ``ids`` that have one."""
    return {pid: str(entry["name"]) for pid, entry in names_of(db, ids).items()}


class NameReader:
    """Reads gsy-e's names from the bridge's stream into the ``names`` table, from the entry
    it last read (``name_cursor``); at most once every ``interval`` seconds per process, and
    never two threads at once. Redis failing is logged, never raised: names are a comfort,
    the pages work with ids."""

    def __init__(self, redis_url: str, stream: str, *, timeout: float,
                 interval: float = 5.0) -> None:
        self.stream = stream
        self.interval = interval
        self.client = redis.Redis.from_url(redis_url, socket_connect_timeout=timeout,
                                           socket_timeout=timeout)
        self._lock = threading.Lock()
        self._last = -float("inf")

    def refresh(self, db: Database, *, force: bool = False) -> int:
        """Read the entries added since the last refresh; the number read."""
        if not force and time.monotonic() - self._last < self.interval:
            return 0
        if not self._lock.acquire(blocking=False):
            return 0
        try:
            self._last = time.monotonic()
            return self._read(db)
        except redis.RedisError as error:
            log.warning("Cannot read names from %s in Redis (%s); the pages show ids until "
                        "it answers.", self.stream, type(error).__name__)
            # Not again for a while: a request that looks pays the connection's timeout.
            self._last = time.monotonic() + RETRY_AFTER_FAILURE - self.interval
            return 0
        finally:
            self._lock.release()

    def _read(self, db: Database) -> int:
        rows = db.fetch("SELECT entry_id FROM name_cursor WHERE stream = ?", (self.stream,))
        after = str(rows[0][0]) if rows else None
        read = 0
        for _ in range(MAX_ROUNDS):
            entries: Any = self.client.xrange(self.stream, min=f"({after}" if after else "-",
                                              count=BATCH)
            if not entries:
                break
            names: dict[str, str] = {}
            for _entry_id, fields in entries:
                try:
                    event = load_bounded(fields.get(EVENT_FIELD, b""), NAME_BOUNDS, "The event")
                except UnsafeJson:
                    continue  # the bridge dead-letters it; nothing to name
                names.update(names_in_event(event))
            save_gsy_names(db, names)
            last = entries[-1][0]
            after = last.decode() if isinstance(last, bytes) else str(last)
            db.execute("INSERT INTO name_cursor (stream, entry_id) VALUES (?, ?) "
                       "ON CONFLICT (stream) DO UPDATE SET entry_id = excluded.entry_id",
                       (self.stream, after))
            read += len(entries)
            if len(entries) < BATCH:
                break
        return read

    def close(self) -> None:
        self.client.close()
