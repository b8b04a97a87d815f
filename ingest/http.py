"""The ingest's HTTP endpoint: bulk uploads of signed readings onto the stream.

Served by gunicorn: ``gunicorn 'ingest.http:create_app()'`` (``runner.ingest`` runs it for
``./scripts/up``). ``POST /api/readings`` takes a JSON array of readings in the format of
:mod:`ingest.readings`, from a meter database holding a credential the operator issued
(:mod:`ingest.uploaders`). Each item's shape is checked at the door: a malformed item is
refused with its index and reason, the well-formed ones of the same upload are still queued,
and the answer says both. 202 means queued: the ingest writer checks the meter's key and the
chain's rules and dead-letters what the contract refuses, with the reason.

Nothing piles up whatever arrives: each client address has a request limit and each
uploader a readings limit per minute (429 with Retry-After), the stream a bound on what it
holds unsettled (503 with Retry-After when full, and when Redis refuses a write), and every
number a client sends is bounded while parsing (400, never 500). ``/openapi.json`` describes
the API; every answer carries security headers and no server banner.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import redis
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ingest.config import HttpSettings
from ingest.openapi import description
from ingest.queue import ReadingQueue, http_room, retry_after
from ingest.readings import ReadingFormatError, load_json, parse_reading, reading_json
from ingest.uploaders import SCHEME, UploaderError, Uploaders, bearer
from pilotchain.config import masked_url
from pilotchain.metering import MeteringError
from pilotchain.pages import hide_server_banner
from pilotchain.settings import load_environment
from worker.health import backlog_problem
from worker.stream import TRANSIENT, out_of_memory

EXTENSION = "pilotchain-ingest"
NOT_FOUND = ("There is no such endpoint; the ingest has POST /api/readings, GET /health and "
             "GET /openapi.json.")
# What a browser may do with an answer of this API: nothing but read it as data.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
# Routes a client address's request limit does not count: the health checks of Compose, the
# native runner and the portal poll the first, the second is a constant; both are cheap and
# must answer while Redis, which keeps the counts, does not.
UNLIMITED = {"/health", "/openapi.json"}
REALM = f'{SCHEME} realm="pilotchain-ingest"'
# Brackets and quotes of a reading in an upload: 14, and room for spaces in hex strings.
MARKS_PER_READING = 16

log = logging.getLogger("ingest.http")


def create_app(test_config: Mapping[str, str] | None = None) -> Flask:
    """The application factory; settings from the environment and ``.env`` (read here,
    once) or, for tests, from ``test_config`` (environment-style names)."""
    env = load_environment() if test_config is None else dict(test_config)
    settings = HttpSettings.from_env(env)
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2,
                                  socket_timeout=5)
    queue = ReadingQueue(client, settings.stream, settings.max_backlog)
    uploaders = Uploaders(settings.uploaders_file)
    api = description(settings)
    hide_server_banner()
    app = Flask(__name__, static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes)
    app.extensions[EXTENSION] = (settings, client)

    @app.before_request
    def limit_address() -> tuple[Response, int] | None:
        if request.path in UNLIMITED:
            return None
        address = request.remote_addr or "unknown"
        try:
            count = queue.hit_address(address)
        except redis.RedisError as error:
            return _unavailable(settings, error)
        if count > settings.address_limit:
            return _retry(f"More than {settings.address_limit} requests came from {address} "
                          "this minute (INGEST_HTTP_ADDRESS_LIMIT); nothing was queued, try "
                          "again after the time in Retry-After.", 429)
        return None

    @app.post("/api/readings")
    def upload() -> tuple[Response, int]:
        return _upload(settings, queue, uploaders)

    @app.get("/health")
    def health() -> tuple[Response, int]:
        return _health(settings, queue)

    @app.get("/openapi.json")
    def openapi() -> tuple[Response, int]:
        return jsonify(api), 200

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 500
        if isinstance(error, RequestEntityTooLarge):
            text = (f"The upload is larger than {settings.max_body_bytes} bytes "
                    "(INGEST_HTTP_MAX_BODY_BYTES); split it into several uploads.")
        elif status == 404:
            text = NOT_FOUND
        elif status == 405:
            text = (f"{_shown_method()} is not allowed here; see GET /health, "
                    "GET /openapi.json, POST /api/readings.")
        else:
            text = f"The request cannot be served: {error.name}."
        return jsonify({"error": text}), status

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[Response, int]:
        # A bug of ours must not show a traceback to a client; the log keeps it.
        log.exception("Unexpected error serving %s %s", _shown_method(), request.path)
        return jsonify({"error": "The ingest failed to handle this request; nothing was "
                                 "queued. The operator can find why in its log."}), 500

    @app.after_request
    def secure(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    return app


def _upload(settings: HttpSettings, queue: ReadingQueue,
            uploaders: Uploaders) -> tuple[Response, int]:
    credential = bearer(request.headers.get("Authorization"))
    try:
        uploader = uploaders.check(credential) if credential else None
    except UploaderError as error:
        log.error("%s", error)
        return _retry("The ingest cannot read its uploader credentials right now; nothing was "
                      "queued, please retry later.", 503)
    if uploader is None:
        said = "is not valid (revoked, mistyped or never issued)" if credential else "is missing"
        answer = jsonify({"error": f"The uploader credential {said}: send the one the operator "
                                   "issued, as 'Authorization: Bearer <name>.<secret>'."})
        answer.headers["WWW-Authenticate"] = REALM
        return answer, 401
    try:
        used = queue.used(uploader)
    except redis.RedisError as error:
        return _unavailable(settings, error)
    if used >= settings.uploader_limit:
        return _over_quota(uploader, used, settings)
    try:
        items = load_json(request.get_data(cache=False), what="The body",
                          max_marks=MARKS_PER_READING * settings.max_readings + 64)
    except ReadingFormatError as error:
        return _error(f"{error} Send a JSON array of readings.", 400)
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
        except MeteringError as error:
            errors.append({"index": index, "error": str(error)})
    if not good:
        return jsonify({"error": f"None of the {len(items)} readings is well-formed; nothing "
                                 "was queued.", "queued": 0, "refused": len(errors),
                        "errors": errors}), 400
    if len(good) > settings.uploader_limit:
        return _error(f"The upload holds {len(good)} well-formed readings, more than the "
                      f"{settings.uploader_limit} an uploader may queue in a minute "
                      "(INGEST_HTTP_UPLOADER_LIMIT); split it.", 413)
    try:
        outcome = queue.enqueue(uploader, settings.uploader_limit, good)
    except redis.RedisError as error:
        return _unavailable(settings, error)
    if outcome.over_quota is not None:
        return _over_quota(uploader, outcome.over_quota, settings, len(good))
    if outcome.full is not None:
        return _retry(f"The reading queue holds {outcome.full} unsettled readings and takes "
                      f"at most {queue.room} from uploads (four fifths of INGEST_MAX_BACKLOG, "
                      f"{settings.max_backlog}; the rest is kept for the meters' MQTT "
                      "readings); nothing was queued, please retry the whole upload later.",
                      503)
    message = f"Queued {len(good)} readings."
    if errors:
        message = (f"Queued {len(good)} of {len(items)} readings; {len(errors)} were refused "
                   "(see errors, by index) and are not queued: fix and upload those again.")
    return jsonify({"queued": len(good), "refused": len(errors), "errors": errors,
                    "message": message}), 202


def _health(settings: HttpSettings, queue: ReadingQueue) -> tuple[Response, int]:
    try:
        length, age = queue.backlog()
    except (*TRANSIENT, redis.RedisError):
        return jsonify({"status": "unavailable", "problem":
                        f"Redis at {masked_url(settings.redis_url)} is unreachable, so "
                        "nothing can be queued.", "stream": settings.stream,
                        "backlog": None, "oldest_unsettled_s": None}), 503
    body: dict[str, Any] = {"status": "ok", "problem": None, "stream": settings.stream,
                            "backlog": length,
                            "oldest_unsettled_s": None if age is None else round(age, 1)}
    if length >= http_room(settings.max_backlog):
        # Still a 200: the door is alive and answers (a restart would not help, and
        # ./scripts/up and Compose judge liveness by the code); uploads get the 503.
        body.update(status="degraded", problem=(
            f"The reading queue is full for uploads ({length} unsettled readings; they may "
            f"fill {http_room(settings.max_backlog)}, four fifths of INGEST_MAX_BACKLOG): "
            "uploads are refused with 503 until the writer settles some."))
        return jsonify(body), 200
    lag = backlog_problem(length, age, settings.health_max_backlog, settings.health_max_age,
                          "INGEST")
    if lag is not None:
        body.update(status="degraded", problem=lag)
    return jsonify(body), 200


def _over_quota(uploader: str, used: int, settings: HttpSettings, more: int | None = None
                ) -> tuple[Response, int]:
    adding = f"; {more} more would pass" if more is not None else ", which reaches"
    return _retry(f"The uploader {uploader} has queued {used} readings this minute{adding} its "
                  f"limit of {settings.uploader_limit} (INGEST_HTTP_UPLOADER_LIMIT). Nothing was "
                  "queued: upload again after the time in Retry-After.", 429)


def _unavailable(settings: HttpSettings, error: redis.RedisError) -> tuple[Response, int]:
    if out_of_memory(error):
        return _retry("The reading queue (Redis) is out of memory; nothing was queued, please "
                      "retry the whole upload later.", 503)
    return _retry(f"The reading queue (Redis at {masked_url(settings.redis_url)}) is "
                  "unreachable; nothing was queued, please retry the whole upload.", 503)


def _retry(text: str, status: int) -> tuple[Response, int]:
    answer = jsonify({"error": text})
    answer.headers["Retry-After"] = str(retry_after())
    return answer, status


def _error(text: str, status: int) -> tuple[Response, int]:
    return jsonify({"error": text}), status


def _shown_method() -> str:
    """The request's method as a message may show it (a client may send any token)."""
    method = request.method
    return method if len(method) <= 16 and method.isalpha() else "This method"
