"""The door's side of the readings stream: admission, quotas and the backlog, in Redis.

Whatever reaches the door, the stream stays bounded: an upload is queued only if the
uploader's quota for the minute and the stream's room (four fifths of ``INGEST_MAX_BACKLOG``
unsettled entries, the rest kept for the meters' MQTT readings; the writer trims what it
settled) both allow all of it, checked and appended in one
script so two workers cannot both take the last room. Counters are fixed one-minute windows
in Redis, shared by every worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

import redis

from ingest.readings import READING_FIELD
from worker.stream import backlog

WINDOW = 60  # seconds of a rate-limit window


def http_room(max_backlog: int) -> int:
    """The part of the backlog uploads may fill: four fifths. The rest is kept for the
    meters' own MQTT readings, so a meter database flooding the door cannot shut the meters
    out of the stream."""
    return max_backlog * 4 // 5
# Windows are kept one more minute than they count, then expire on their own.
_TTL = 2 * WINDOW

# KEYS: the stream, the uploader's counter. ARGV: its limit, the backlog limit, the counter's
# time to live, the entries' source, then the readings. Returns {verdict, number}: 0 queued
# (the new length), 1 over quota (readings used this minute), 2 no room (the length).
_ENQUEUE = f"""
local n = #ARGV - 4
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if used + n > tonumber(ARGV[1]) then return {{1, used}} end
local length = redis.call('XLEN', KEYS[1])
if length + n > tonumber(ARGV[2]) then return {{2, length}} end
for i = 5, #ARGV do
  redis.call('XADD', KEYS[1], '*', '{READING_FIELD}', ARGV[i], 'source', ARGV[4])
end
redis.call('INCRBY', KEYS[2], n)
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {{0, length + n}}
"""
# KEYS: the counter. ARGV: its time to live. Returns the count including this request.
_HIT = "local c = redis.call('INCR', KEYS[1]) " \
       "if c == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end return c"


@dataclass(frozen=True)
class Enqueued:
    """What an upload's admission came to: ``queued`` True, or why not (``over_quota``:
    readings the uploader already used this minute; ``full``: the stream's length)."""

    queued: bool
    over_quota: int | None = None
    full: int | None = None


def retry_after(now: float | None = None) -> int:
    """Seconds until the current window ends (at least 1)."""
    moment = time.time() if now is None else now
    return max(1, WINDOW - int(moment) % WINDOW)


class ReadingQueue:
    """The stream and the counters of one door (shared with the other workers)."""

    def __init__(self, client: redis.Redis, stream: str, max_backlog: int) -> None:
        self.client = client
        self.stream = stream
        self.max_backlog = max_backlog
        self.room = http_room(max_backlog)
        self._enqueue = client.register_script(_ENQUEUE)
        self._hit = client.register_script(_HIT)

    def _key(self, kind: str, who: str) -> str:
        return f"{self.stream}:http:{kind}:{who}:{int(time.time()) // WINDOW}"

    def hit_address(self, address: str) -> int:
        """Count one request of ``address`` in this window; the count so far."""
        return int(cast(Any, self._hit(keys=[self._key("address", address)], args=[_TTL])))

    def used(self, uploader: str) -> int:
        """Readings ``uploader`` queued this minute (read before an upload is parsed: a
        flood past the limit costs a counter read, not the parsing of its body)."""
        return int(self.client.get(self._key("uploader", uploader)) or 0)

    def enqueue(self, uploader: str, limit: int, readings: list[str]) -> Enqueued:
        """Queue every reading of an upload, or none (quota or room exhausted)."""
        verdict, number = cast(list[int], self._enqueue(
            keys=[self.stream, self._key("uploader", uploader)],
            args=[limit, self.room, _TTL, f"http {uploader}", *readings]))
        if verdict == 1:
            return Enqueued(False, over_quota=int(number))
        if verdict == 2:
            return Enqueued(False, full=int(number))
        return Enqueued(True)

    def backlog(self) -> tuple[int, float | None]:
        """The stream's length and the age in seconds of its oldest entry (None: empty)."""
        return backlog(self.client, self.stream)
