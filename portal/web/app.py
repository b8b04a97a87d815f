"""The portal's application factory: sign-in with the wallet, each participant's own bill,
trades, slots and statements, and the grid operator's overview.

Served by gunicorn: ``gunicorn 'portal.web.app:create_app()'`` (``runner.portal`` runs it for
``./scripts/up``). Settings: ``portal.web.config``. Pages read the indexer's tables
(``portal.queries``) and the live bill from the contract (``portal.web.ledger``). The OpenAPI
description, served at ``/openapi.json``: ``portal.web.openapi``.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from flask import Flask, Response, jsonify, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.middleware.proxy_fix import ProxyFix

from pilotchain.errors import Phrase
from pilotchain.pages import hide_server_banner, secure_headers, style_blueprint
from pilotchain.settings import load_environment
from portal.errors import PortalConfigError, PortalError
from portal.names import NameReader
from portal.statement import has_fonts
from portal.web import openapi
from portal.web.api import api
from portal.web.auth import auth
from portal.web.config import WebSettings
from portal.web.http import EXTENSION, Services, error_json, sentence_json
from portal.web.ledger import Ledger
from portal.web.metrics import PortalMetrics
from portal.web.operations import DeadLetters
from portal.web.pages import pages
from portal.web.store import SignInStore

UNEXPECTED = "The portal hit an unexpected error; please try again in a minute."
STALE = ("The request did not carry this page's security token (or it had expired), so "
         "nothing was done; reload the page and try again.")


def create_app(test_config: Mapping[str, str] | None = None) -> Flask:
    """The application factory; settings from the environment and ``.env`` (read here,
    once) or, for tests, from ``test_config`` (environment-style names)."""
    env = load_environment() if test_config is None else dict(test_config)
    settings = WebSettings.from_env(env)
    app = Flask(__name__, static_folder=None)
    app.config.update(
        SECRET_KEY=settings.secret_key or shared_secret(settings.secret_file),
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        SESSION_COOKIE_NAME="pilotchain_portal",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=settings.session_minutes),
        # The token lives as long as the session that holds it.
        WTF_CSRF_TIME_LIMIT=None,
        WTF_CSRF_HEADERS=["X-CSRFToken"],
    )
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies,  # type: ignore[method-assign]
                                x_proto=settings.trusted_proxies)
    use_gunicorn_logging(app)
    if not has_fonts(settings.pdf_fonts):
        app.logger.warning(
            "No DejaVu Sans in %s (PORTAL_PDF_FONTS): PDF statements print names in Latin-1 "
            "only, other characters as '?'. On Debian: apt-get install fonts-dejavu-core.",
            settings.pdf_fonts)
    hide_server_banner()
    store = SignInStore(settings.index.database_url, nonce_seconds=60 * settings.nonce_minutes,
                        session_seconds=60 * settings.session_minutes,
                        per_wallet=settings.challenges_per_wallet,
                        per_client=settings.challenges_per_client)
    store.migrate()
    ledger = Ledger(settings.index.rpc_url, settings.index.chain.deployment_file,
                    timeout=settings.index.rpc_timeout_seconds)
    dead_letters = DeadLetters(settings.redis_url, settings.dead_letters,
                               timeout=settings.health_timeout,
                               shown=settings.dead_letters_shown)
    names = NameReader(settings.redis_url, settings.trade_stream,
                       timeout=settings.health_timeout)
    # Every worker reads the names that came since the last one did, before its first page.
    names.refresh(store.db, force=True)
    metrics = PortalMetrics(settings, store)
    app.extensions[EXTENSION] = Services(settings, store, ledger, dead_letters, names, metrics)
    CSRFProtect(app)
    for blueprint in (auth, api, pages, style_blueprint()):
        app.register_blueprint(blueprint)
    described = openapi.description(settings)
    app.add_url_rule("/openapi.json", "openapi", lambda: jsonify(described))
    register_error_handlers(app)
    app.after_request(headers)
    # Outermost: it sees the connection before ProxyFix, and times everything inside.
    metrics.app.install(app)
    return app


# Every answer carries personal data or leads to it: no cache keeps a copy.
NO_STORE = {"Cache-Control": "no-store"}


def headers(response: Response) -> Response:
    """The security headers (pilotchain.pages) on every answer, errors and JSON included."""
    response.headers.update(NO_STORE)
    return secure_headers(request, response)


def shared_secret(path: Path) -> str:
    """The session secret every worker reads from ``path``, made by the first one there
    (created exclusively, so two workers starting together agree)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as error:
        raise PortalConfigError(f"Cannot create the session secret {path}: "
                                f"{error.strerror}; set PORTAL_SECRET_KEY instead.") from None
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    try:
        secret = path.read_text().strip()
    except OSError as error:
        raise PortalConfigError(f"Cannot read the session secret {path}: "
                                f"{error.strerror}.") from None
    if len(secret) < 32:
        raise PortalConfigError(f"The session secret in {path} is too short (or still being "
                                "written); delete the file and start the portal again.")
    return secret


def use_gunicorn_logging(app: Flask) -> None:
    """Under gunicorn, log through its error log (the process's log file) at INFO."""
    gunicorn_log = logging.getLogger("gunicorn.error")
    if gunicorn_log.handlers:
        for logger in (app.logger, logging.getLogger("pilotchain"), logging.getLogger("portal")):
            logger.handlers = list(gunicorn_log.handlers)
            logger.setLevel(logging.INFO)
            logger.propagate = False


def is_api_request() -> bool:
    return request.path.startswith("/api/")


def register_error_handlers(app: Flask) -> None:
    """Every API error as ``{"error": sentence}`` with its status; never a traceback."""

    @app.errorhandler(PortalError)
    def portal_error(error: PortalError) -> tuple[Response, int, dict[str, str]]:
        return error_json(error)

    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError) -> tuple[Response, int]:
        del error
        return sentence_json(STALE, 400)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> HTTPException | tuple[Response, int]:
        if not is_api_request():
            return error
        if error.code == 404:
            return sentence_json("There is no such portal endpoint.", 404)
        if error.code == 405:
            return sentence_json(Phrase("This endpoint does not accept {method} requests.",
                                        method=request.method), 405)
        if error.code == 413:
            return sentence_json("The request body is too large.", 413)
        if error.code is None or error.code >= 500:
            return sentence_json(UNEXPECTED, error.code or 500)
        return sentence_json(Phrase("The portal cannot answer this request (HTTP status "
                                    "{status}).", status=error.code), error.code)

    @app.errorhandler(InternalServerError)
    def unexpected(error: InternalServerError) -> InternalServerError | tuple[Response, int]:
        return sentence_json(UNEXPECTED, 500) if is_api_request() else error
