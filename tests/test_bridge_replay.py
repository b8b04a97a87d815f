"""``./scripts/replay``: recordings into the stream, paced, with clear errors."""

from __future__ import annotations

import io
import json
import re
import subprocess
import time
from pathlib import Path

import redis
from recordings import DATA

from bridge.events import EVENT_FIELD
from bridge.replay import publish
from pilotchain.settings import PROJECT_ROOT

STREAM = "replay:trades"


def stream_lines(redis_url: str) -> list[dict]:
    client = redis.Redis.from_url(redis_url)
    try:
        return [json.loads(fields[EVENT_FIELD.encode()]) for _, fields in client.xrange(STREAM)]
    finally:
        client.close()


def run_replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PROJECT_ROOT / "scripts" / "replay"), *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_replay_publishes_a_recording_line_for_line(redis_url: str) -> None:
    recording = DATA / "default_3_one_sided.jsonl"
    result = run_replay(str(recording), "--redis-url", redis_url, "--stream", STREAM)
    assert result.returncode == 0, result.stderr
    assert "replay: published 48/48" in result.stderr
    expected = [json.loads(line) for line in recording.read_text().splitlines()]
    assert stream_lines(redis_url) == expected


def test_bad_lines_are_reported_by_number_and_skipped(redis_url: str, tmp_path: Path) -> None:
    good = (DATA / "default_3_one_sided.jsonl").read_text().splitlines()[:3]
    recording = tmp_path / "mixed.jsonl"
    recording.write_text("\n".join([good[0], "{not json", good[1], "", "[1, 2]", good[2]]))
    result = run_replay(str(recording), "--redis-url", redis_url, "--stream", STREAM)
    assert result.returncode == 1
    assert f"replay: {recording}:2: not JSON (Expecting property name enclosed in double " \
           "quotes); skipped" in result.stderr
    assert f"replay: {recording}:5: a list, not a JSON object; skipped" in result.stderr
    assert re.search(r"replay: published 3/5 \(\d+/s\), skipped 2 bad lines", result.stderr)
    assert stream_lines(redis_url) == [json.loads(line) for line in good]


def test_a_missing_file_or_redis_is_a_sentence(tmp_path: Path) -> None:
    missing = run_replay(str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"replay: {tmp_path / 'nope.jsonl'} does not exist " \
                                     "(or is not a file)."
    down = run_replay(str(DATA / "default_3_one_sided.jsonl"), "--redis-url",
                      "redis://127.0.0.1:1/0")
    assert down.returncode == 1
    assert "replay: cannot publish to Redis at redis://127.0.0.1:1/0" in down.stderr


def test_rate_paces_the_publishing(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    began = time.monotonic()
    progress = publish(client, STREAM, DATA / "default_3_one_sided.jsonl", 80.0, io.StringIO())
    elapsed = time.monotonic() - began
    client.close()
    assert progress.published == 48
    # 48 events at 80/s: the last chunk is due 0.6 s after the start.
    assert elapsed >= 0.55, elapsed
