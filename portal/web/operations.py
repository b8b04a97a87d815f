"""What the operator's view shows of the services around the chain: the health the bridge,
the ingest writer, its MQTT subscriber and the slot closer report on their own ``/health``
endpoints (up, up but degraded with their sentence, or down), and the entries the bridge and
the ingest dead-lettered, waiting for attention.

Read-only and bounded: each look has a short timeout (PORTAL_HEALTH_TIMEOUT) and at most
PORTAL_DEAD_LETTERS_SHOWN entries per stream are read. A service or Redis that does not answer
is shown as a sentence, never as an error of the page.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
import requests

from pilotchain.config import DeadLetterStreams, masked_url

# Longest stored payload shown with a dead letter; the rest is cut (a payload may be huge).
PAYLOAD_SHOWN = 500


@dataclass(frozen=True)
class Watched:
    """A service whose ``/health`` the operator sees: its name, that endpoint and the
    setting that names it."""

    name: str
    url: str
    setting: str


def health_of(service: Watched, timeout: float) -> dict[str, Any]:
    """``{"name", "url", "up", "status", "sentence", ...}``: up when the endpoint answers 200;
    down, with a sentence saying why, otherwise."""

    def down(sentence: str, status: str = "down") -> dict[str, Any]:
        return {"name": service.name, "url": service.url, "up": False, "status": status,
                "sentence": sentence}

    with requests.Session() as http:
        http.trust_env = False  # the services are on this host or its network, no proxy
        try:
            reply = http.get(service.url, timeout=timeout)
        except requests.Timeout:
            return down(f"The {service.name} did not answer at {service.url} within "
                        f"{timeout:g} s.")
        except requests.RequestException:
            return down(f"The {service.name} cannot be reached at {service.url}; it is not "
                        f"running, or {service.setting} names the wrong address.")
    try:
        body = reply.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    status = str(body.get("status") or ("ok" if reply.status_code == 200 else "down"))
    problem = str(body.get("problem") or "").strip()
    if reply.status_code == 200:
        # Up, but maybe "degraded": behind on its stream, or it lost its broker session.
        sentence = (f"The {service.name} is running but degraded: {problem}"
                    if status == "degraded" and problem else f"The {service.name} is running.")
        return {"name": service.name, "url": service.url, "up": True, "status": status,
                "sentence": sentence, "last_block": body.get("last_block")}
    said = f": {problem}" if problem else "."
    return down(f"The {service.name} answers {reply.status_code} ({status}){said}", status)


def health(services: tuple[Watched, ...], timeout: float) -> list[dict[str, Any]]:
    """Every service's health, asked in parallel (the view waits one timeout at most)."""
    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        return list(pool.map(lambda s: health_of(s, timeout), services))


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> dict[str, str]:
    """A dead letter as shown: its reason, where it came from, when, and its payload (cut)."""
    values = {_text(k): _text(v) for k, v in fields.items()}
    payload = values.get("event", "")
    cut = len(payload) > PAYLOAD_SHOWN
    return {"id": _text(entry_id), "reason": values.get("reason", ""),
            "entry_id": values.get("entry_id", ""), "rejected_at": values.get("rejected_at", ""),
            "payload": payload[:PAYLOAD_SHOWN] + ("…" if cut else "")}


class DeadLetters:
    """The bridge's and the ingest's dead-letter streams, read (never written) in Redis."""

    def __init__(self, redis_url: str, streams: DeadLetterStreams, *, timeout: float,
                 shown: int) -> None:
        self.shown_url = masked_url(redis_url)
        self.streams = (("bridge", streams.trades), ("ingest", streams.readings))
        self.timeout = timeout
        self.shown = shown
        self.client = redis.Redis.from_url(redis_url, socket_connect_timeout=timeout,
                                           socket_timeout=timeout)

    def read(self) -> dict[str, Any]:
        """``{"streams": [{"service", "stream", "count", "latest"}], "error"}``: each stream's
        length and newest entries (newest first), or ``error``, a sentence, if Redis fails."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for _, stream in self.streams:
                pipe.xlen(stream)
                pipe.xrevrange(stream, count=self.shown)
            replies = pipe.execute()
        except redis.RedisError as error:
            return {"streams": [], "error": self._sentence(error)}
        found = []
        for index, (service, stream) in enumerate(self.streams):
            count, latest = replies[2 * index], replies[2 * index + 1]
            found.append({"service": service, "stream": stream, "count": int(count),
                          "latest": [_entry(entry_id, fields) for entry_id, fields in latest]})
        return {"streams": found, "error": None}

    def _sentence(self, error: redis.RedisError) -> str:
        if isinstance(error, redis.TimeoutError):
            why = f"did not answer within {self.timeout:g} s"
        elif isinstance(error, redis.AuthenticationError):
            why = "refused the portal's password (REDIS_URL or REDIS_PASSWORD_FILE)"
        elif isinstance(error, redis.ConnectionError):
            why = "cannot be reached"
        else:
            why = "failed to answer"
        return (f"Redis at {self.shown_url} {why}, so the dead-lettered entries cannot be "
                "shown right now.")

    def close(self) -> None:
        self.client.close()
