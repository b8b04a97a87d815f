"""The ingest's HTTP endpoint: bulk uploads of signed readings onto the stream.

Served by gunicorn: ``gunicorn 'ingest.http:create_app()'`` (``runner.ingest`` runs it for
``./scripts/up``). ``POST /api/readings`` takes a JSON array of readings in the format of
:mod:`ingest.readings`. Each item's shape is checked at the door: a malformed item is refused
with its index and reason, the well-formed ones of the same upload are still queued, and the
answer says both. 202 means queued: the ingest writer checks the meter's key and the chain's
rules and dead-letters what the contract refuses, with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import redis
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from bridge.stream import TRANSIENT
from ingest.config import HttpSettings
from ingest.readings import READING_FIELD, ReadingFormatError, parse_reading, reading_json
from pilotchain.config import masked_url
from pilotchain.metering import MeteringError
from pilotchain.settings import load_environment

EXTENSION = "pilotchain-ingest"
NOT_FOUND = ("There is no such endpoint; the ingest has POST /api/readings and GET /health.")


def create_app(test_config: Mapping[str, str] | None = None) -> Flask:
    """The application factory; settings from the environment and ``.env`` (read here,
    once) or, for tests, from ``test_config`` (environment-style names)."""
    env = load_environment() if test_config is None else dict(test_config)
    settings = HttpSettings.from_env(env)
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2,
                                  socket_timeout=5)
    app = Flask(__name__, static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    app.extensions[EXTENSION] = (settings, client)

    @app.post("/api/readings")
    def upload() -> tuple[Response, int]:
        return _upload(settings, client)

    @app.get("/health")
    def health() -> tuple[Response, int]:
        try:
            client.ping()
        except (*TRANSIENT, redis.RedisError):
            return jsonify({"status": "unavailable", "problem":
                            f"Redis at {masked_url(settings.redis_url)} is unreachable."}), 503
        return jsonify({"status": "ok", "stream": settings.stream}), 200

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 500
        if isinstance(error, RequestEntityTooLarge):
            text = (f"The upload is larger than {settings.max_body_bytes} bytes "
                    "(INGEST_HTTP_MAX_BODY_BYTES); split it into several uploads.")
        elif status == 404:
            text = NOT_FOUND
        elif status == 405:
            text = f"{request.method} is not allowed here; see GET /health, POST /api/readings."
        else:
            text = error.description or error.name
        return jsonify({"error": text}), status

    return app


def _upload(settings: HttpSettings, client: redis.Redis) -> tuple[Response, int]:
    body = request.get_data(cache=False)
    try:
        items = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        where = f" at character {error.pos}" if isinstance(error, json.JSONDecodeError) else ""
        return _error(f"The body is not JSON{where}; send a JSON array of readings.", 400)
    if not isinstance(items, list):
        return _error("The body must be a JSON array of readings, even for one reading.", 400)
    if not items:
        return _error("The array is empty; nothing was queued.", 400)
    if len(items) > settings.max_readings:
        return _error(f"The upload holds {len(items)} readings, more than "
                      f"{settings.max_readings} (INGEST_HTTP_MAX_READINGS); split it.", 413)
    good: list[str] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            good.append(json.dumps(reading_json(parse_reading(item))))
        except (ReadingFormatError, MeteringError) as error:
            errors.append({"index": index, "error": str(error)})
    if not good:
        return jsonify({"error": f"None of the {len(items)} readings is well-formed; nothing "
                                 "was queued.", "queued": 0, "refused": len(errors),
                        "errors": errors}), 400
    try:
        pipe = client.pipeline(transaction=True)
        for text in good:
            pipe.xadd(settings.stream, {READING_FIELD: text})
        pipe.execute()
    except (*TRANSIENT, redis.RedisError):
        return _error(f"The reading queue (Redis at {masked_url(settings.redis_url)}) is "
                      "unreachable; nothing was queued, please retry the whole upload.", 503)
    message = f"Queued {len(good)} readings."
    if errors:
        message = (f"Queued {len(good)} of {len(items)} readings; {len(errors)} were refused "
                   "(see errors, by index) and are not queued: fix and upload those again.")
    return jsonify({"queued": len(good), "refused": len(errors), "errors": errors,
                    "message": message}), 202


def _error(text: str, status: int) -> tuple[Response, int]:
    return jsonify({"error": text}), status
