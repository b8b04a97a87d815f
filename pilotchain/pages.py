"""What every PilotChain web app (the faucet, the portal) sends with each answer, and what
it must not send.

The pages load nothing from elsewhere (pilots may be offline): a strict policy costs nothing
and blocks injected scripts and framing. The same headers go on every answer, JSON and
errors included, so no answer of these apps can be framed or sniffed into something else.
"""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

from flask import Blueprint
from werkzeug.wrappers import Request, Response

R = TypeVar("R", bound=Response)

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data:; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    # For browsers that predate CSP's frame-ancestors.
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
# The stylesheet every page shares (pilotchain/static/), at <prefix>/style/<file>.
STYLESHEET = "pilotchain.css"
STYLE_PATH = "/style"


def style_blueprint(name: str = "style") -> Blueprint:
    """The shared stylesheet, served by the app that registers this blueprint (each app
    serves its own copy from the installed package: nothing comes from a CDN, so a pilot
    without internet sees the same pages). One look for the faucet and the portal."""
    return Blueprint(name, __name__, static_folder="static", static_url_path=STYLE_PATH)


# HSTS only on answers that came over HTTPS: over plain HTTP browsers ignore it, and on
# localhost it would bind every other local service to HTTPS for a year.
HSTS = "max-age=31536000"


def secure_headers(request: Request, response: R) -> R:
    """``response`` with the security headers (and HSTS if ``request`` came over HTTPS,
    directly or as a trusted proxy's X-Forwarded-Proto says)."""
    response.headers.update(SECURITY_HEADERS)
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = HSTS
    return response


def hide_server_banner() -> None:
    """Stop gunicorn from naming itself in a ``Server`` header on every answer.

    gunicorn (23) writes that header itself, outside the application, and has no setting to
    leave it out, so its response class is wrapped once per worker (the app factory runs in
    each worker). The name tells a scanner which exploits to try and tells users nothing.
    """
    try:
        wsgi: Any = importlib.import_module("gunicorn.http.wsgi")
    except ImportError:  # not under gunicorn (tests of the app object, flask run)
        return
    original = wsgi.Response.default_headers
    if getattr(original, "pilotchain_hides_server", False):
        return

    def default_headers(self: Any) -> list[str]:
        return [line for line in original(self) if not line.lower().startswith("server:")]

    default_headers.pilotchain_hides_server = True  # type: ignore[attr-defined]
    wsgi.Response.default_headers = default_headers
