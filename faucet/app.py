"""The faucet's application factory: test funds for any wallet from a web page and a JSON API.

Served by gunicorn: ``gunicorn 'faucet.app:create_app()'`` (``runner.faucet`` runs it for
``./scripts/up``). Settings: ``faucet.config``; the shared service layer: ``faucet.claims``;
the OpenAPI description (served at ``/openapi.json``): ``faucet.openapi``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

from eth_account.signers.local import LocalAccount
from flask import Flask, Response, jsonify, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFProtect
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.middleware.proxy_fix import ProxyFix

from faucet import openapi
from faucet.api import api
from faucet.claims import ClaimService
from faucet.config import FaucetSettings
from faucet.coordination import SendLock
from faucet.errors import FaucetError
from faucet.http import EXTENSION, Services, error_json, sentence_json
from faucet.keys import load_account
from faucet.limits import ClaimLimits
from faucet.metrics import FaucetMetrics
from faucet.page import page
from faucet.wallet import FaucetWallet
from pilotchain.pages import hide_server_banner, secure_headers, style_blueprint
from pilotchain.settings import load_environment

LIMITS_PREFIX = "pilotchain-faucet"
UNEXPECTED = "The faucet hit an unexpected error; please try again in a minute."
NOT_FOUND = ("There is no such faucet endpoint; the API has GET /api/info, POST /api/claim "
             "and POST /api/add_key.")


def create_app(test_config: Mapping[str, str] | None = None) -> Flask:
    """The application factory.

    Settings come from the environment and ``.env`` (read here, once), or, for tests,
    from ``test_config``: environment-style names such as ``{"RPC_URL": ...}``.
    """
    env = load_environment() if test_config is None else dict(test_config)
    settings = FaucetSettings.from_env(env)
    account = load_account(settings)
    app = Flask(__name__, static_folder=None)
    app.config.update(
        SECRET_KEY=settings.secret_key or derived_secret(account),
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        SESSION_COOKIE_NAME="pilotchain_faucet",
        SESSION_COOKIE_SAMESITE="Lax",
        # CSRF is checked by the page's form view only; the JSON API has no cookies to abuse.
        WTF_CSRF_CHECK_DEFAULT=False,
    )
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies,  # type: ignore[method-assign]
                                x_proto=settings.trusted_proxies)
    use_gunicorn_logging(app)
    hide_server_banner()
    metrics = FaucetMetrics(settings, account.address)
    app.extensions[EXTENSION] = build_services(app, settings, account, metrics)
    for prefix in settings.prefixes:
        suffix = "_prefixed" if prefix else ""
        app.register_blueprint(page, url_prefix=prefix or None, name=f"page{suffix}")
        app.register_blueprint(api, url_prefix=prefix or None, name=f"api{suffix}")
        app.register_blueprint(style_blueprint(), url_prefix=prefix or None,
                               name=f"style{suffix}")
    described = openapi.description(settings)
    app.add_url_rule("/openapi.json", "openapi", lambda: jsonify(described))
    register_error_handlers(app)
    # On every answer, the API's and errors included (pilotchain.pages).
    app.after_request(lambda response: secure_headers(request, response))
    # Outermost: it sees the connection before ProxyFix, and times everything inside.
    metrics.app.install(app)
    return app


def build_services(app: Flask, settings: FaucetSettings, account: LocalAccount,
                   metrics: FaucetMetrics) -> Services:
    """Wire the limits (Flask-Limiter on the shared Redis), the send lock, the wallet and
    the claim service."""
    limiter = Limiter(get_remote_address, app=app, storage_uri=settings.redis_url,
                      strategy="fixed-window", key_prefix=LIMITS_PREFIX, headers_enabled=False,
                      storage_options={"socket_timeout": 5, "socket_connect_timeout": 5})
    lock = SendLock(settings.lock_file or default_lock_file(account.address), account.address)
    # Start from the node's count: the chain may have been reset since the last run.
    lock.forget()
    wallet = FaucetWallet(settings, account, lock=lock, nonces=lock)
    limits = ClaimLimits(limiter, settings.address_limits, settings.ip_limits)
    return Services(settings, ClaimService(settings, wallet, limits, metrics),
                    CSRFProtect(app))


def default_lock_file(address: str) -> Path:
    """One lock per faucet account on this machine, wherever the faucet runs from."""
    return Path(tempfile.gettempdir()) / f"pilotchain-faucet-{address.lower()}.lock"


def derived_secret(account: LocalAccount) -> str:
    """A session secret every worker derives alike (so a form served by one worker can be
    posted to another) without another setting; it reveals nothing about the key."""
    return hmac.new(bytes(account.key), b"pilotchain faucet session", hashlib.sha256).hexdigest()


def use_gunicorn_logging(app: Flask) -> None:
    """Under gunicorn, log the faucet's and the chain module's lines through its error log
    (the process's log file) at INFO."""
    gunicorn_log = logging.getLogger("gunicorn.error")
    if gunicorn_log.handlers:
        for logger in (app.logger, logging.getLogger("pilotchain")):
            logger.handlers = list(gunicorn_log.handlers)
            logger.setLevel(logging.INFO)
            logger.propagate = False


def is_api_request() -> bool:
    """Whether this request is for the JSON API (answered in JSON, even a 404)."""
    return (request.blueprint or "").startswith("api") or "/api/" in request.path


def register_error_handlers(app: Flask) -> None:
    """Every error of the API as ``{"error": sentence}``; the page renders its own."""

    @app.errorhandler(FaucetError)
    def faucet_error(error: FaucetError) -> tuple[Response, int, dict[str, str]]:
        return error_json(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> HTTPException | Response:
        if not is_api_request():
            return error
        response, status = sentence_json(http_sentence(error, app), error.code or 500)
        response.status_code = status
        return response

    @app.errorhandler(InternalServerError)
    def unexpected(error: InternalServerError) -> InternalServerError | tuple[Response, int]:
        # Flask has logged the traceback already; the user gets one sentence, nothing more.
        return sentence_json(UNEXPECTED, 500) if is_api_request() else error


def http_sentence(error: HTTPException, app: Flask) -> str:
    """The API's sentence for an HTTP error werkzeug raised (413, 404, 405, ...)."""
    if error.code == 413:
        return (f"The request body is larger than the {app.config['MAX_CONTENT_LENGTH']} "
                'bytes the faucet accepts; send only {"address": "0x..."}.')
    if error.code == 404:
        return NOT_FOUND
    if error.code == 405:
        return f"This endpoint does not accept {request.method} requests."
    return error.description or UNEXPECTED
