"""Pieces shared by the OpenAPI (3.0) descriptions of the faucet's and the portal's HTTP APIs.

Each app describes its own routes (``faucet.openapi``, ``portal.web.openapi``) and serves the
description at ``/openapi.json``; the tests hold every route described and nothing described
that is not a route, and fuzz each API from its description (Schemathesis). The descriptions
are code, not a file, because they follow the configuration (the faucet's path prefix, the
portal's page size) and share the apps' own bounds.
"""

from __future__ import annotations

from typing import Any

OPENAPI_VERSION = "3.0.3"

# Every error of both APIs: one sentence saying what is wrong and what to do.
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "a sentence for people"}},
}
# Amounts beyond what JavaScript numbers hold exactly, as decimal strings.
AMOUNT = {"type": "string", "pattern": "^-?[0-9]+$"}
RETRY_AFTER = {"Retry-After": {"description": "seconds until a retry can succeed",
                               "schema": {"type": "integer", "minimum": 0}}}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def answer(description: str, schema: dict[str, Any] | None = None, *,
           media_type: str = "application/json",
           headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """One response: its description, its body's media type and schema, its headers."""
    found: dict[str, Any] = {"description": description}
    found["content"] = {media_type: {"schema": schema if schema is not None
                                     else {"type": "string"}}}
    if headers:
        found["headers"] = headers
    return found


def error(description: str, *, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """An error answer: ``{"error": sentence}``."""
    return answer(description, ERROR, headers=headers)


def obj(properties: dict[str, Any], *, required: list[str] | None = None,
        nullable: bool = False) -> dict[str, Any]:
    """A JSON object schema; every property listed is required unless ``required`` says."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    needed = list(properties) if required is None else required
    if needed:  # OpenAPI 3.0's schemas (draft 4) do not allow an empty list
        schema["required"] = needed
    if nullable:
        schema["nullable"] = True
    return schema


def document(title: str, description: str, paths: dict[str, Any],
             components: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole description."""
    found: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": "1", "description": description},
        "paths": paths,
    }
    if components:
        found["components"] = components
    return found
