"""The Redis side of a stream-to-chain writer (the bridge's trades, the ingest's meter
readings): the consumer group, acknowledgements, the dead-letter stream, the single-writer
lock and the start-up guard. Nothing here knows what an entry holds.

Every method lets redis-py's ``ConnectionError``/``TimeoutError`` through: the worker's loop
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

from worker.entries import Entry, Rejected
from worker.errors import TargetChanged, WriterLocked

# Errors after which a retry can succeed: Redis down, restarting or still loading its file.
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)

_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then " \
         "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
# The ack comes first: Redis lets a script that has written go on writing when it is at
# maxmemory (noeviction), so a dead letter is never refused half done, and a stream full of
# bad entries can still be drained. MAXLEN ~ bounds the dead letters (ARGV[6]).
_DEAD_LETTER = "if redis.call('xack', KEYS[1], ARGV[1], ARGV[2]) == 1 then " \
               "redis.call('xadd', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'reason', ARGV[3], " \
               "'entry_id', ARGV[2], 'stream', KEYS[1], 'event', ARGV[4], 'rejected_at', " \
               "ARGV[5]) return 1 end return 0"
# Without a bound: effectively none (Redis takes any count).
UNBOUNDED = 2**62
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
                 dead_letter_stream: str, service: str = "worker",
                 dead_letter_maxlen: int = UNBOUNDED) -> None:
        self.client = client
        self.service = service
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.dead_letter_stream = dead_letter_stream
        self.dead_letter_maxlen = dead_letter_maxlen

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
            # the codec's recovery (the contract's duplicate checks) keeps that harmless.
            self.ensure_group()
            return []
        return [entry for _, entries in reply or [] for entry in _decode(entries)]

    def claim_unacknowledged(self, count: int = 1000) -> Iterator[list[Entry]]:
        """Every entry delivered to any consumer of the group but never acknowledged, taken
        over by this consumer, page by page (a crashed writer leaves these behind)."""
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

    def dead_letter(self, rejected: Sequence[Rejected], to: str | None = None,
                    maxlen: int | None = None) -> None:
        """Move entries to the dead-letter stream (or ``to``, keeping about ``maxlen``) with
        their reason, each in one script with its ack: a crash can neither lose a moved entry
        nor leave it to be read again, and a retry after a lost reply adds no second copy
        (only a pending entry moves)."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        target = to or self.dead_letter_stream
        keep = maxlen if maxlen is not None else self.dead_letter_maxlen
        pipe = self.client.pipeline(transaction=False)
        for item in rejected:
            pipe.eval(_DEAD_LETTER, 2, self.stream, target, self.group,
                      item.entry_id, item.reason, item.payload, now, keep)
        pipe.execute()

    def trim_settled(self) -> tuple[int, float | None]:
        """Drop every entry all the stream's groups have settled; then the backlog: how many
        entries remain and the age in seconds of the oldest (None: the stream is empty).

        The rule: of each group, its oldest pending entry, or (nothing pending) the one after
        the last it was delivered; entries before the earliest of these were delivered to
        every group and acknowledged, and only those go (XTRIM MINID, exact, so what remains
        first is the oldest unsettled entry). An entry not yet delivered, read but not final,
        or of a group that fell behind is never trimmed.
        """
        try:
            groups = self.client.xinfo_groups(self.stream)
        except redis.ResponseError as error:
            if "no such key" not in str(error):
                raise
            return 0, None  # a Redis that lost its data: the group is made again on reading
        floor: tuple[int, int] | None = None
        for group in groups:
            if int(group["pending"]):
                summary = self.client.xpending(self.stream, _text(group["name"]))
                candidate = _entry_id(summary["min"])
            else:
                ms, seq = _entry_id(group["last-delivered-id"])
                candidate = (ms, seq + 1)
            floor = candidate if floor is None else min(floor, candidate)
        if floor is not None and floor > (0, 0):
            self.client.xtrim(self.stream, minid=f"{floor[0]}-{floor[1]}", approximate=False)
        return backlog(self.client, self.stream)

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


def backlog(client: redis.Redis, stream: str) -> tuple[int, float | None]:
    """How many entries ``stream`` holds and the age in seconds of the oldest (None: empty).
    Its writer trims what it settled, so these are what waits to be settled."""
    pipe = client.pipeline(transaction=False)
    pipe.xlen(stream)
    pipe.xrange(stream, count=1)
    length, first = pipe.execute()
    if not first:
        return int(length), None
    oldest_ms = _entry_id(first[0][0])[0]
    return int(length), max(0.0, time.time() - oldest_ms / 1000)


class WriterLock:
    """Only one writer sends transactions for a stream: a Redis key with a time to live,
    renewed by the holder. A holder on this host whose process is gone (killed) is taken
    over at once instead of after the time to live."""

    def __init__(self, client: redis.Redis, stream: str, ttl: float = 10.0,
                 service: str = "worker") -> None:
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
        """Extend the lock; raises WriterLocked if another writer took it meanwhile."""
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


def out_of_memory(error: Exception) -> bool:
    """Whether Redis refused a write because it reached ``maxmemory`` (noeviction): it
    passes once entries are settled and trimmed, so it is waited out, not fatal."""
    # redis-py turns the "OOM" reply into its own class (without the prefix); a script's
    # refusal may come as a plain error naming maxmemory.
    return isinstance(error, redis.exceptions.OutOfMemoryError) or (
        isinstance(error, redis.ResponseError) and "maxmemory" in str(error))


def _entry_id(value: bytes | str) -> tuple[int, int]:
    ms, _, seq = _text(value).partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
