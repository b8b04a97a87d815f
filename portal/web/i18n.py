"""The portal's languages: English and German (the BC4P pilot is in Germany).

Chosen per request: the ``lang`` query parameter if it names one (the page's switch, links
to documents), else the ``pilotchain_lang`` cookie the switch sets, else the best match of
the browser's ``Accept-Language``, else English.
"""

from __future__ import annotations

from flask import request

LANGUAGES = ("en", "de")
COOKIE = "pilotchain_lang"


def chosen_language() -> str:
    """The language of this request's answer."""
    for raw in (request.args.get("lang", ""), request.cookies.get(COOKIE, "")):
        if raw in LANGUAGES:
            return raw
    return request.accept_languages.best_match(LANGUAGES) or LANGUAGES[0]
