"""The ingest's HTTP API against its own description: ``/openapi.json`` names exactly the
routes the app has, and Schemathesis, generating requests from it (valid and invalid, with an
uploader's credential), never gets a 500 or a traceback from the door under real gunicorn;
every answer is one the description lists, with the body it describes.

The number of generated cases per route is printed at the end of the module (``-s``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from ingest_fixtures import Door, door_env, serving
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ingest.config import HttpSettings
from ingest.http import create_app
from ingest.openapi import description
from runner.redis import RedisService

# Cases Hypothesis generates per route (each both valid and invalid input, by Schemathesis).
EXAMPLES = 400
GENERATED: Counter[str] = Counter()
ANSWERS: Counter[tuple[str, int]] = Counter()


def routes_of_the_app() -> set[tuple[str, str]]:
    app = create_app({"REDIS_URL": "redis://127.0.0.1:1/0", "KEYS_DIR": "/nonexistent"})
    return {(rule.rule, method.lower()) for rule in app.url_map.iter_rules()
            for method in rule.methods or () if method not in {"HEAD", "OPTIONS"}}


def test_the_description_names_exactly_the_apps_routes() -> None:
    app = create_app({"REDIS_URL": "redis://127.0.0.1:1/0", "KEYS_DIR": "/nonexistent"})
    answer = app.test_client().get("/openapi.json")
    assert answer.status_code == 200, answer.get_data()
    described = json.loads(answer.get_data())
    assert described["openapi"].startswith("3.1")
    documented = {(path, method) for path, operations in described["paths"].items()
                  for method in operations}
    assert documented == routes_of_the_app()
    # Every answer a route gives is described, with a sentence for every refusal.
    upload = described["paths"]["/api/readings"]["post"]["responses"]
    assert set(upload) == {"202", "400", "401", "413", "429", "503"}


@pytest.fixture(scope="module")
def door(redis_server: RedisService, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Door]:
    """The door under real gunicorn with limits no fuzzing reaches (they are tested on their
    own) and small uploads (so generated bodies stay small)."""
    home = tmp_path_factory.mktemp("fuzz")
    with serving(door_env(redis_server.url, home, **SETTINGS), home,
                 uploader="fuzzer") as served:
        yield served
    print("\nSchemathesis cases per route: " + ", ".join(
        f"{label}: {count}" for label, count in sorted(GENERATED.items())))
    print("Answers: " + ", ".join(f"{label} {status}: {count}"
                                  for (label, status), count in sorted(ANSWERS.items())))
    (Path(home) / "fuzz-counts.json").write_text(json.dumps(GENERATED))


# Loaded from the description the door below serves (its settings are fixed here), not
# through a fixture: Schemathesis 4.32's lazy fixture loader needs an attribute pytest 9
# removed. test_the_door_serves_this_description holds the two equal.
SETTINGS = {"INGEST_HTTP_ADDRESS_LIMIT": "1000000000", "INGEST_HTTP_UPLOADER_LIMIT": "1000000000",
            "INGEST_MAX_BACKLOG": "100000000", "INGEST_HTTP_MAX_READINGS": "20",
            "INGEST_HTTP_MAX_BODY_BYTES": "65536", "INGEST_STREAM": "fuzz:readings"}
DESCRIPTION = description(HttpSettings.from_env({"KEYS_DIR": "/nonexistent", **SETTINGS}))
schema = schemathesis.openapi.from_dict(DESCRIPTION)


def no_traceback(ctx: Any, response: Any, case: Any) -> bool | None:
    """Nothing a client sends shows it the inside of the door."""
    del ctx, case
    text = response.text or ""
    if "Traceback" in text or "File \"/" in text:
        raise AssertionError(f"The answer shows a traceback: {text[:300]}")
    return None


def test_the_door_serves_this_description(door: Door) -> None:
    assert requests.get(f"{door.url}/openapi.json", timeout=10).json() == DESCRIPTION


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_no_generated_request_gets_a_500_or_a_traceback(case: Any, door: Door) -> None:
    GENERATED[case.operation.label] += 1
    response = case.call(base_url=door.url, headers=door.auth, timeout=30)
    ANSWERS[(case.operation.label, response.status_code)] += 1
    case.validate_response(response, checks=[
        not_a_server_error, status_code_conformance, content_type_conformance,
        response_schema_conformance, no_traceback])
