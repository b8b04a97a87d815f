"""The OpenAPI 3.1 description of the ingest's HTTP API, served at ``/openapi.json``.

Written by hand next to the routes it describes (``tests/test_ingest_openapi.py`` holds the
two equal, and fuzzes the app from this description); limits that are settings appear with
the values in effect.
"""

from __future__ import annotations

from typing import Any

from ingest.config import HttpSettings
from ingest.readings import MAX_DIGITS
from pilotchain.metering import MAX_REGISTER

HEX32 = "^0x[0-9a-fA-F]{64}$"
UUID = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# r, s (its first hex digit below 8: the lower half, as the contract wants), v 27 or 28.
SIGNATURE = "^0x[0-9a-fA-F]{64}[0-7][0-9a-fA-F]{63}1[bBcC]$"
WHOLE = {"type": "integer", "minimum": 0, "maximum": MAX_REGISTER}

ERROR = {"type": "object", "required": ["error"],
         "properties": {"error": {"type": "string", "description": "one sentence"}}}
REFUSED_ITEM = {"type": "object", "required": ["index", "error"],
                "properties": {"index": {"type": "integer", "minimum": 0},
                               "error": {"type": "string"}}}
UPLOAD_ERROR = {"type": "object", "required": ["error"],
                "properties": {"error": {"type": "string"},
                               "queued": {"type": "integer", "minimum": 0},
                               "refused": {"type": "integer", "minimum": 0},
                               "errors": {"type": "array", "items": REFUSED_ITEM}}}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again",
                               "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
HEALTH = {"type": "object", "required": ["status"],
          "properties": {"status": {"type": "string", "enum": ["ok", "degraded", "unavailable"]},
                         "problem": {"type": ["string", "null"]},
                         "stream": {"type": "string"},
                         "backlog": {"type": ["integer", "null"]},
                         "oldest_unsettled_s": {"type": ["number", "null"]}}}


def _json(schema: dict[str, Any], description: str,
          headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description,
                              "content": {"application/json": {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def description(settings: HttpSettings) -> dict[str, Any]:
    """The API as the door serving ``settings`` runs it."""
    reading = {
        "type": "object",
        "additionalProperties": False,
        "required": ["meter", "time", "import_wh", "export_wh", "minutes_anchor", "signature"],
        "properties": {
            "meter": {"type": "string", "description": "a uuid, or 0x and 64 hex digits",
                      "anyOf": [{"pattern": UUID}, {"pattern": HEX32}]},
            "time": {**WHOLE, "description": "unix seconds, UTC"},
            "import_wh": {**WHOLE, "description": "OBIS 1.8.0 register, Wh"},
            "export_wh": {**WHOLE, "description": "OBIS 2.8.0 register, Wh"},
            "minutes_anchor": {"type": "string", "pattern": HEX32},
            "signature": {"type": "string", "pattern": SIGNATURE,
                          "description": "EIP-712 signature by the meter's key "
                                         "(docs/metering.md): r, s in the curve order's lower "
                                         "half, v 27 or 28"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "PilotChain meter ingest",
            "version": "1",
            "description": (
                "A meter database uploads signed meter readings; the ingest writer takes "
                "them to the Settlement contract. Every refusal is one sentence. Numbers in "
                f"a body have at most {MAX_DIGITS} digits."),
        },
        "components": {
            "securitySchemes": {"uploader": {
                "type": "http", "scheme": "bearer",
                "description": "`<name>.<secret>`, issued by the operator with "
                               "`pilotchain uploaders issue NAME`"}},
            "schemas": {"Reading": reading, "Error": ERROR},
        },
        "paths": {
            "/api/readings": {"post": {
                "summary": "Queue an upload of signed readings",
                "security": [{"uploader": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "array", "minItems": 1, "maxItems": settings.max_readings,
                    "items": {"$ref": "#/components/schemas/Reading"}}}}},
                "responses": {
                    "202": _json({"type": "object",
                                  "required": ["queued", "refused", "errors", "message"],
                                  "properties": {"queued": {"type": "integer", "minimum": 1},
                                                 "refused": {"type": "integer", "minimum": 0},
                                                 "errors": {"type": "array",
                                                            "items": REFUSED_ITEM},
                                                 "message": {"type": "string"}}},
                                 "the well-formed readings are queued; malformed items are "
                                 "refused by index"),
                    "400": _json(UPLOAD_ERROR, "not JSON, not an array, empty, or no item "
                                               "well-formed; nothing queued"),
                    "401": _json(ERROR, "no valid uploader credential",
                                 {"WWW-Authenticate": {"schema": {"type": "string"}}}),
                    "413": _json(ERROR, f"more than {settings.max_body_bytes} bytes or "
                                        f"{settings.max_readings} readings"),
                    "429": _json(ERROR, "over the uploader's or the address's limit for the "
                                        "minute; nothing queued", RETRY_AFTER),
                    "503": _json(ERROR, "the queue is full or unreachable; nothing queued",
                                 RETRY_AFTER),
                },
            }},
            "/health": {"get": {
                "summary": "Whether the door can queue, and the backlog behind it",
                "security": [],
                "responses": {
                    "200": _json(HEALTH, "it answers: `ok`, or `degraded` with a sentence "
                                         "when the backlog is long or the queue full"),
                    "503": _json(HEALTH, "it cannot queue: Redis is unreachable"),
                },
            }},
            "/openapi.json": {"get": {
                "summary": "This description",
                "security": [],
                "responses": {
                    "200": {"description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}}},
                },
            }},
        },
    }
