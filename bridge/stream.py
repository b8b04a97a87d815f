"""The Redis side of a stream-to-chain writer (the bridge's trades, the ingest's meter
readings): the consumer group, acknowledgements, the dead-letter stream, the single-writer
lock and the start-up guard. Nothing here knows what an entry holds.

Every method lets redis-py's ``ConnectionError``/``TimeoutError`` through: the bridge's loop
decides when to retry (bounded backoff) and keeps un-sent acknowledgements until then.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bridge.errors import TargetChanged, WriterLocked
from bridge.events import Rejected

# Errors after which a retry can succeed: Redis down, restarting or still loading its file.
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
# An entry id and its fields as text; None for an entry deleted from the stream meanwhile.
Entry = tuple[str, dict[str, str] | None]

_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then " \
         "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
_DEAD_LETTER = "if redis.call('xack', KEYS[1], ARGV[1], ARGV[2]) == 1 then " \
               "redis.call('xadd', KEYS[2], '*', 'reason', ARGV[3], 'entry_id', ARGV[2], " \
               "'stream', KEYS[1], 'event', ARGV[4], 'rejected_at', ARGV[5]) return 1 end " \
               "return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then " \
           "return redis.call('del', KEYS[1]) else return 0 end"


def connect_redis(url: str) -> redis.Redis:
    """A client that fails fast and keeps bytes (payloads may be garbage).

    redis-py's own retries are off: a command whose reply was lost when Redis went away may
    still have run, and retrying an XREADGROUP silently would leave the entries it delivered
    in this consumer's pending list unseen. The loop retries instead, knowing it must look.
    """
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5,
                                health_check_interval=10, retry=Retry(NoBackoff(), 0))


class StreamConsumer:
    """One consumer of a stream's group, plus the dead-letter stream. ``service`` names the
    writer in keys and messages (``bridge``, ``ingest``)."""

    def __init__(self, client: redis.Redis, stream: str, group: str, consumer: str,
                 dead_letter_stream: str, service: str = "bridge") -> None:
        self.client = client
        self.service = service
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.dead_letter_stream = dead_letter_stream

    def ensure_group(self) -> None:
        """Create the group at the stream's start (earlier entries count too) if missing."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def read_new(self, count: int, block_ms: int) -> list[Entry]:
        """Up to ``count`` entries never delivered to this group, waiting up to ``block_ms``."""
        try:
            reply = cast(StreamReply, self.client.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=count,
                block=block_ms or None))
        except redis.ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            # Redis lost the group (restarted without its append-only file): start over;
            # isRecorded and the contract's duplicate check keep that harmless.
            self.ensure_group()
            return []
        return [entry for _, entries in reply or [] for entry in _decode(entries)]

    def claim_unacknowledged(self, count: int = 1000) -> Iterator[list[Entry]]:
        """Every entry delivered to any consumer of the group but never acknowledged, taken
        over by this consumer, page by page (a crashed bridge leaves these behind)."""
        cursor = "0-0"
        while True:
            reply = self.client.xautoclaim(self.stream, self.group, self.consumer,
                                           min_idle_time=0, start_id=cursor, count=count)
            cursor = _text(reply[0])
            # A deleted entry (Redis 6.2 still lists it) is dead-lettered with that reason.
            entries = list(_decode(reply[1]))
            if entries:
                yield entries
            if cursor == "0-0":
                return

    def own_pending(self, count: int = 1000) -> Iterator[list[Entry]]:
        """The entries delivered to this consumer and not yet acknowledged, page by page
        (reading the consumer's own history, which changes nothing but delivery counts)."""
        cursor = "0-0"
        while True:
            reply = cast(StreamReply, self.client.xreadgroup(
                self.group, self.consumer, {self.stream: cursor}, count=count))
            page = list(_decode(reply[0][1])) if reply else []
            if not page:
                return
            cursor = page[-1][0]
            yield page  # an entry deleted meanwhile has fields None: dead-lettered, said why

    def own_pending_count(self) -> int:
        """How many entries this consumer holds unacknowledged, as Redis counts them."""
        summary = self.client.xpending(self.stream, self.group)
        for consumer in summary.get("consumers") or []:
            if _text(consumer["name"]) == self.consumer:
                return int(consumer["pending"])
        return 0

    def ack(self, entry_ids: Sequence[str]) -> None:
        """Acknowledge entries: the group never delivers them again."""
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, len(entry_ids), 1000):
            pipe.xack(self.stream, self.group, *entry_ids[start:start + 1000])
        pipe.execute()

    def dead_letter(self, rejected: Sequence[Rejected], to: str | None = None) -> None:
        """Move entries to the dead-letter stream (or ``to``) with their reason, each in one
        script with its ack: a crash can neither lose a moved entry nor leave it to be read
        again, and a retry after a lost reply adds no second copy (only a pending entry
        moves)."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        target = to or self.dead_letter_stream
        pipe = self.client.pipeline(transaction=False)
        for item in rejected:
            pipe.eval(_DEAD_LETTER, 2, self.stream, target, self.group,
                      item.entry_id, item.reason, item.payload, now)
        pipe.execute()

    def check_target(self, chain_id: int, contract: str) -> None:
        """Refuse to settle a stream into another chain or contract than it was before."""
        key = f"{self.stream}:{self.service}:target"
        wanted = json.dumps({"chain_id": chain_id, "contract": contract})
        if self.client.set(key, wanted, nx=True):
            return
        current = _text(self.client.get(key) or b"")
        if current and json.loads(current) != json.loads(wanted):
            before = json.loads(current)
            raise TargetChanged(
                f"The stream {self.stream} was settled into Settlement {before['contract']} "
                f"on chain {before['chain_id']}, but the {self.service} is now configured "
                f"for {contract} on chain {chain_id}. If that change is intended, delete the "
                f"Redis key {key} (redis-cli DEL {key}) or use a new stream."
            )


class WriterLock:
    """Only one writer sends transactions for a stream: a Redis key with a time to live,
    renewed by the holder. A holder on this host whose process is gone (killed) is taken
    over at once instead of after the time to live."""

    def __init__(self, client: redis.Redis, stream: str, ttl: float = 10.0,
                 service: str = "bridge") -> None:
        self.client = client
        self.service = service
        self.stream = stream
        self.key = f"{stream}:{service}:lock"
        self.ttl_ms = int(ttl * 1000)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"
        self.renewed_at = 0.0

    def acquire(self, timeout: float) -> None:
        """Take the lock, waiting up to ``timeout`` for a live holder to let go."""
        deadline = time.monotonic() + timeout
        while True:
            if self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
                self.renewed_at = time.monotonic()
                return
            holder = _text(self.client.get(self.key) or b"")
            if holder and _holder_is_gone(holder, self.token):
                self.client.delete(self.key)
                continue
            if time.monotonic() >= deadline:
                raise WriterLocked(
                    f"Another {self.service} ({holder or 'unknown'}) is writing the stream "
                    f"{self.stream}; run only one {self.service} per stream, or wait until "
                    "the other one has stopped."
                )
            time.sleep(0.5)

    def renew(self) -> None:
        """Extend the lock; raises WriterLocked if another bridge took it meanwhile."""
        if not self.client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms):
            if self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
                self.renewed_at = time.monotonic()
                return  # it had expired while Redis was away; nobody else took it
            raise WriterLocked(
                f"Another {self.service} took over the stream lock {self.key} while this one "
                f"could not renew it; stopping so that only one {self.service} writes."
            )
        self.renewed_at = time.monotonic()

    def held(self) -> bool:
        """Whether the lock is certainly still ours (renewed within its time to live)."""
        return time.monotonic() - self.renewed_at < self.ttl_ms / 1000

    def release(self) -> None:
        self.client.eval(_RELEASE, 1, self.key, self.token)


def _holder_is_gone(holder: str, own_token: str) -> bool:
    """Whether the lock's holder was a process of this host that no longer runs. The same
    pid as ours means an earlier incarnation (a restarted container's pid 1)."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or holder == own_token:
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed child not yet reaped by its parent (e.g. a test) is dead all the same."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


# XREADGROUP's reply with bytes responses (RESP2): one (stream, entries) pair per stream;
# redis-py's annotations cover every protocol and decoding at once, so they are narrowed here.
RawEntries = Sequence[tuple[bytes, dict[bytes, bytes] | None]]
StreamReply = list[tuple[bytes, RawEntries]] | None


def _decode(entries: RawEntries
            ) -> Iterator[Entry]:
    """Entry ids and fields as text; undecodable bytes become U+FFFD (and fail validation).
    A deleted entry comes as None (no entry is ever written without fields; redis-py
    shows a deleted one in a consumer's history as an empty mapping)."""
    for entry_id, fields in entries:
        if not fields:
            yield _text(entry_id), None
            continue
        yield _text(entry_id), {_text(k): _text(v) for k, v in fields.items()}


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
