"""The page (one HTML document; its script fills it in from the JSON API), the portal's
own static files and the chart library's, and the health answer.

uPlot, the charts, is an npm package (package.json) served from node_modules by this app:
pilots may be offline, so nothing is loaded from a CDN.
"""

from __future__ import annotations

from pathlib import Path

from flask import (
    Blueprint,
    Response,
    abort,
    jsonify,
    make_response,
    render_template,
    request,
    send_from_directory,
)

from pilotchain.settings import PROJECT_ROOT
from portal.web.http import services
from portal.web.i18n import (
    COOKIE,
    LANGUAGE_NAMES,
    LANGUAGES,
    SCRIPT_WORDS,
    chosen_language,
    translate,
)


def uplot_dir() -> Path:
    """Where npm ci installed uPlot: beside the code in a checkout (PROJECT_ROOT may point
    elsewhere there: it locates the settings), else under PROJECT_ROOT, which is
    PILOTCHAIN_HOME in the Compose image (the package itself is in site-packages)."""
    beside = Path(__file__).resolve().parents[2] / "node_modules" / "uplot" / "dist"
    return beside if beside.is_dir() else PROJECT_ROOT / "node_modules" / "uplot" / "dist"


UPLOT_DIR = uplot_dir()
UPLOT_FILES = {"uPlot.iife.min.js", "uPlot.min.css"}

pages = Blueprint("pages", __name__, static_folder="static", static_url_path="/static",
                  template_folder="templates")


@pages.get("/")
def index() -> Response:
    """The page in the chosen language (portal.web.i18n); ``?lang=`` (the switch) also
    keeps the choice in a cookie for the next visit."""
    chain = services().settings.index.chain
    lang = chosen_language()
    html = render_template("portal.html", network=chain.network_name,
                           contact=services().settings.operator_contact, lang=lang,
                           languages=LANGUAGE_NAMES, words=SCRIPT_WORDS[lang],
                           _=lambda text: translate(lang, text))
    response = make_response(html)
    if request.args.get("lang") in LANGUAGES:
        response.set_cookie(COOKIE, lang, max_age=365 * 24 * 3600, samesite="Lax",
                            secure=services().settings.secure_cookies, httponly=True)
    return response


@pages.get("/vendor/uplot/<name>")
def uplot(name: str) -> Response:
    if name not in UPLOT_FILES:
        abort(404)
    if not (UPLOT_DIR / name).is_file():
        abort(404, "The chart library is not installed: run npm ci in the project.")
    return send_from_directory(UPLOT_DIR, name)


@pages.get("/health")
def health() -> Response:
    return jsonify({"status": "ok"})
