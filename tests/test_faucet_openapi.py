"""The faucet's OpenAPI description (``/openapi.json``) against the app, and the API fuzzed
from it: Schemathesis generates requests from the description, valid ones and ones that break
it (wrong types, missing fields, other media types), and sends them to the faucet under real
gunicorn on the session's chain with a real Redis. No answer may be a 500 or show a
traceback, and every answer must be one the description lists (status, media type, body).

The number of generated cases per operation is printed at the end of the module.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import schemathesis
from faucet_fixtures import RunningFaucet, faucet_env, start_gunicorn_faucet
from hypothesis import HealthCheck, settings
from openapi_check import Tally, described, no_traceback, report, served
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from faucet.app import create_app
from faucet.config import FaucetSettings
from faucet.openapi import description
from runner.localnet import LocalNetwork

pytestmark = pytest.mark.chain

CHECKS = [not_a_server_error, no_traceback, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]
EXAMPLES = 100
TALLY = Tally()


@pytest.fixture(scope="module")
def fuzzed_faucet(chain: LocalNetwork, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[RunningFaucet]:
    """The faucet under gunicorn for this module, trusting one proxy: each case comes from
    an address of its own, so the per-IP limit does not answer every claim."""
    home = tmp_path_factory.mktemp("faucet-openapi")
    yield from start_gunicorn_faucet(chain, home, {"FAUCET_TRUSTED_PROXIES": "1"})


# The description of a faucet with the default settings, as the running one serves it
# (test_the_running_faucet_serves_the_description_fuzzed holds them equal); loaded when the
# module is, so that each operation is a test of its own.
DESCRIPTION = description(FaucetSettings())
SCHEMA = schemathesis.openapi.from_dict(DESCRIPTION)
SCHEMA.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.fixture(scope="module", autouse=True)
def tally_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """The tally of generated cases per operation, printed when the module ends."""
    yield
    if TALLY.cases:
        report(request, TALLY.lines("faucet API fuzzed"))


def test_every_route_is_described_and_nothing_else(chain: LocalNetwork, redis_url: str,
                                                   tmp_path: Path) -> None:
    """Routes and description are equal, with the legacy prefix and without it."""
    for prefix in ("/faucet", "none"):
        env = faucet_env(chain, redis_url, tmp_path, FAUCET_PATH_PREFIX=prefix)
        app = create_app(env)
        expected = description(FaucetSettings.from_env(env))
        assert served(app) == described(expected), prefix
        assert app.test_client().get("/openapi.json").get_json() == expected


def test_the_running_faucet_serves_the_description_fuzzed(fuzzed_faucet: RunningFaucet
                                                          ) -> None:
    raw = requests.get(f"{fuzzed_faucet.url}/openapi.json", timeout=30).json()
    assert raw == DESCRIPTION
    SCHEMA.validate()
    assert {op.ok().label for op in SCHEMA.get_all_operations()} >= {
        "POST /api/claim", "POST /faucet/api/add_key", "GET /api/info"}


def client_address() -> str:
    return str(ipaddress.IPv4Address(0x0A000000 + secrets.randbelow(2**24)))


@dataclass(frozen=True)
class PageForm:
    """A form the page served: its session cookie and CSRF token, good for an hour."""

    cookies: dict[str, str]
    token: str


@pytest.fixture(scope="module")
def page_form(fuzzed_faucet: RunningFaucet) -> PageForm:
    reply = requests.get(f"{fuzzed_faucet.url}/", timeout=60)
    match = re.search(r'name="csrf_token" value="([^"]+)"', reply.text)
    assert match, "the page has no CSRF token"
    return PageForm(reply.cookies.get_dict(), match.group(1))


@SCHEMA.parametrize()
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_no_request_gets_a_500_or_a_traceback(case: Case, fuzzed_faucet: RunningFaucet,
                                              page_form: PageForm) -> None:
    """Each generated request from an address of its own; a form post for the page (every
    other one) with the page's real CSRF token and cookie, so it reaches the claim."""
    cookies: dict[str, str] = {}
    if case.operation.method == "post" and case.operation.path.rstrip("/") in ("", "/faucet"):
        TALLY.posts += 1
        if isinstance(case.body, dict) and TALLY.posts % 2:
            case.body["csrf_token"] = page_form.token
            cookies = page_form.cookies
    response = case.call(base_url=fuzzed_faucet.url, cookies=cookies, timeout=60,
                         headers={"X-Forwarded-For": client_address()})
    case.validate_response(response, checks=CHECKS)
    TALLY.add(case, [response.status_code])
