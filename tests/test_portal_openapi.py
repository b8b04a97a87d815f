"""The portal's OpenAPI description (``/openapi.json``) against the app, and the API fuzzed
from it: Schemathesis generates requests from the description, valid ones and ones that break
it, and sends them to the portal under real gunicorn on the real chain with a recording
replayed and indexed (SQLite). Each request goes out twice: without a session, and with the
real session of the role the route is for (a participant signed in with its wallet for its
own data, the operator for the operator's routes), every POST with the session's real CSRF
token; for half the valid cases a participant route names the signed-in participant, so its
data is really read. No answer may be a 500 or show a traceback, and every answer must be one
the description lists (status, media type, body).

The number of generated cases per operation is printed at the end of the module.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_check import Tally, described, no_traceback, report, served
from portal_web_fixtures import PortalClient, PortalWorld
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from portal.web.app import create_app
from portal.web.config import WebSettings
from portal.web.openapi import description

pytestmark = pytest.mark.chain

CHECKS = [not_a_server_error, no_traceback, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]
EXAMPLES = 100
TALLY = Tally()
# The description of a portal with the default settings, as the running one serves it
# (test_the_running_portal_serves_the_description_fuzzed holds them equal); loaded when the
# module is, so that each operation is a test of its own.
DESCRIPTION = description(WebSettings())
SCHEMA = schemathesis.openapi.from_dict(DESCRIPTION)
# The sessions are real (Callers): Schemathesis generates no cookie or CSRF header of its own.
SCHEMA.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                with_security_parameters=False)


@dataclass(frozen=True)
class Caller:
    """One way to call the portal: a session's cookie and CSRF token (or none)."""

    name: str
    cookies: dict[str, str]
    csrf: str


@dataclass(frozen=True)
class Callers:
    anonymous: Caller
    participant: Caller
    operator: Caller
    own_id: str


def caller(name: str, client: PortalClient) -> Caller:
    return Caller(name, dict(client.cookies), client.csrf)


@pytest.fixture(scope="module")
def callers(portal_world: PortalWorld) -> Callers:
    """Real sessions: nobody (with the CSRF token of a session that never signed in), the
    participant A's wallet, the operator's."""
    anonymous = portal_world.client()
    anonymous.me()
    alice, ops = portal_world.client(), portal_world.client()
    assert alice.sign_in(portal_world.alice).status_code == 200
    assert ops.sign_in(portal_world.operator).status_code == 200
    return Callers(caller("anonymous", anonymous), caller("participant", alice),
                   caller("operator", ops), portal_world.a)


@pytest.fixture(scope="module", autouse=True)
def tally_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """The tally of generated cases per operation, printed when the module ends."""
    yield
    if TALLY.cases:
        report(request, TALLY.lines("portal API fuzzed"))


def test_every_route_is_described_and_nothing_else(portal_world: PortalWorld,
                                                   tmp_path: Path) -> None:
    env = {**portal_world.service.env, "PORTAL_SECRET_FILE": str(tmp_path / "secret")}
    app = create_app(env)
    expected = description(WebSettings.from_env(env))
    assert served(app) == described(expected)
    assert app.test_client().get("/openapi.json").get_json() == expected


def test_the_running_portal_serves_the_description_fuzzed(portal_world: PortalWorld) -> None:
    raw = requests.get(f"{portal_world.url}/openapi.json", timeout=30).json()
    assert raw == DESCRIPTION
    SCHEMA.validate()


def client_address() -> str:
    return str(ipaddress.IPv4Address(0x0A000000 + secrets.randbelow(2**24)))


def role_for(case: Case, callers: Callers) -> Caller | None:
    """Whose session the route is for; None for the sign-in routes and pages (nobody's)."""
    path = case.operation.path
    if path.startswith("/api/participants/"):
        return callers.participant
    if path.startswith("/api/operator/"):
        return callers.operator
    return None


@SCHEMA.parametrize()
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_no_request_gets_a_500_or_a_traceback(case: Case, portal_world: PortalWorld,
                                              callers: Callers) -> None:
    role = role_for(case, callers)
    if (role is callers.participant and case.meta is not None
            and case.meta.generation.mode.is_positive and "participant" in
            (case.path_parameters or {})):
        TALLY.posts += 1
        if TALLY.posts % 2:
            case.path_parameters["participant"] = callers.own_id
    statuses = []
    for who in (callers.anonymous, *([role] if role is not None else [])):
        headers = {"X-Forwarded-For": client_address()}
        if case.operation.method == "post":
            headers["X-CSRFToken"] = who.csrf
        response = case.call(base_url=portal_world.url, headers=headers, cookies=who.cookies,
                             timeout=60)
        case.validate_response(response, checks=CHECKS)
        statuses.append(response.status_code)
    TALLY.add(case, statuses)
