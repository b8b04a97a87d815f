"""``pilotchain replay FILE [--rate N]`` (and ``./scripts/replay``): publish recorded gsy-e
trades into the stream.

Each line of FILE is one recorded ``track_trade_event`` call (the format of
``tests/data/*.jsonl``) and becomes one stream entry exactly as the gsy-e plug-in writes it,
so the bridge runs without gsy-e. A line that is not a JSON object is reported with its
number and skipped; the rest is still published (the bridge validates the trades themselves
and dead-letters the bad ones) and the exit status is 1. A missing file publishes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import redis

from bridge.config import StreamSettings
from bridge.events import EVENT_FIELD
from pilotchain.config import masked_url
from pilotchain.settings import load_environment

CHUNK = 500


@dataclass
class Progress:
    """Counts shown while publishing and at the end."""

    total: int
    published: int = 0
    skipped: int = 0
    started: float = 0.0
    shown: float = 0.0

    def show(self, out: TextIO, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.shown < 1.0:
            return
        self.shown = now
        elapsed = max(now - self.started, 1e-9)
        out.write(f"replay: published {self.published}/{self.total} "
                  f"({self.published / elapsed:.0f}/s)"
                  f"{f', skipped {self.skipped} bad lines' if self.skipped else ''}\n")
        out.flush()


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> argparse.Namespace:
    settings = StreamSettings.from_env(env)
    parser = argparse.ArgumentParser(
        prog="replay", description="Publish recorded gsy-e trades into the bridge's stream.")
    parser.add_argument("file", type=Path, help="JSON lines of recorded trade events")
    parser.add_argument("--rate", type=float, default=None, metavar="N",
                        help="publish N trades per second (default: as fast as possible)")
    parser.add_argument("--redis-url", default=settings.redis_url,
                        help=f"default: the Redis settings' {masked_url(settings.redis_url)}")
    parser.add_argument("--stream", default=settings.stream,
                        help=f"default: BRIDGE_STREAM or {settings.stream}")
    args = parser.parse_args(argv)
    if args.rate is not None and args.rate <= 0:
        parser.error(f"--rate must be above 0, not {args.rate}")
    return args


def events(path: Path, errors: TextIO, progress: Progress) -> Iterator[str]:
    """The file's events as compact JSON; bad lines are reported and skipped."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError as error:
                errors.write(f"replay: {path}:{number}: not JSON ({error.msg}); skipped\n")
                progress.skipped += 1
                continue
            if not isinstance(event, dict):
                errors.write(f"replay: {path}:{number}: a {type(event).__name__}, not a JSON "
                             "object; skipped\n")
                progress.skipped += 1
                continue
            yield json.dumps(event, separators=(",", ":"))


def count_lines(path: Path) -> int:
    with path.open("rb") as data:
        return sum(1 for line in data if line.strip())


def publish(client: redis.Redis, stream: str, path: Path, rate: float | None,
            out: TextIO) -> Progress:
    """Append every event of ``path`` to ``stream``, paced to ``rate`` per second if given."""
    progress = Progress(total=count_lines(path), started=time.monotonic())
    chunk_size = CHUNK if rate is None else max(1, min(CHUNK, int(rate / 20)))
    pipe = client.pipeline(transaction=False)
    pending = 0
    for event in events(path, out, progress):
        pipe.xadd(stream, {EVENT_FIELD: event})
        pending += 1
        if pending >= chunk_size:
            _flush(pipe, pending, progress, rate)
            pending = 0
            progress.show(out)
    if pending:
        _flush(pipe, pending, progress, rate)
    progress.show(out, final=True)
    return progress


def _flush(pipe: redis.client.Pipeline, count: int, progress: Progress,
           rate: float | None) -> None:
    if rate is not None:
        # Wait until this chunk is due, so the average rate holds over the whole file.
        due = progress.started + (progress.published + count) / rate
        time.sleep(max(0.0, due - time.monotonic()))
    pipe.execute()
    progress.published += count


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Publish FILE; ``env`` is the environment snapshot (read here when not given)."""
    args = parse_args(argv, load_environment() if env is None else env)
    if not args.file.is_file():
        print(f"replay: {args.file} does not exist (or is not a file).", file=sys.stderr)
        return 2
    client = redis.Redis.from_url(args.redis_url, socket_connect_timeout=2, socket_timeout=10)
    try:
        progress = publish(client, args.stream, args.file, args.rate, sys.stderr)
    except (redis.ConnectionError, redis.TimeoutError) as error:
        print(f"replay: cannot publish to Redis at {masked_url(args.redis_url)} ({error}). Is "
              "it running (./scripts/status)?", file=sys.stderr)
        return 1
    except redis.RedisError as error:
        print(f"replay: Redis at {masked_url(args.redis_url)} refused to publish ({error}); "
              "check REDIS_URL, or REDIS_HOST, REDIS_PORT and REDIS_PASSWORD_FILE.",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()
    return 1 if progress.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
