"""The web page: a plain HTML form that works without JavaScript, the faucet's terms, and
an "Add network to MetaMask" button (the only script, in static/faucet.js)."""

from __future__ import annotations

import json
from decimal import ROUND_DOWN, Decimal

from flask import Blueprint, Response, make_response, render_template, request
from flask_wtf.csrf import CSRFError

from faucet.claims import Claim, FaucetInfo
from faucet.config import WEI_PER_UNIT
from faucet.errors import FaucetError
from faucet.http import add_network_params, client_ip, retry_headers, services, status_for

STALE_FORM = ("The form had expired or did not come from this page, so nothing was sent; "
              "please submit it again.")

page = Blueprint("page", __name__, static_folder="static", static_url_path="/static")


@page.route("/", methods=["GET", "POST"], strict_slashes=False)
def index() -> Response:
    """Show the form; on POST, claim for the address in it and show the outcome."""
    result: Claim | None = None
    error: str | None = None
    status, headers = 200, {}
    address = ""
    if request.method == "POST":
        address = request.form.get("address", "")
        try:
            services().csrf.protect()
            result = services().claims.claim(address, client_ip())
            address = ""
        except CSRFError:
            error, status = STALE_FORM, 400
        except FaucetError as problem:
            error, status, headers = str(problem), status_for(problem), retry_headers(problem)
    info, info_error = faucet_info()
    html = render_template("index.html", result=result, error=error, address=address,
                           info=info, info_error=info_error,
                           network=json.dumps(add_network_params(info)))
    return make_response(html, status, headers)


@page.app_template_filter("units")
def units_filter(wei: int) -> str:
    """Wei as whole units for people: grouped thousands, at most four decimals."""
    rounded = (Decimal(wei) / WEI_PER_UNIT).quantize(Decimal("0.0001"), rounding=ROUND_DOWN)
    text = f"{rounded:,.4f}".rstrip("0").rstrip(".")
    return text


def faucet_info() -> tuple[FaucetInfo, str | None]:
    """The faucet's terms and balance; without the balance, and the sentence saying why,
    when the chain cannot be asked (the network details still help set up a wallet)."""
    try:
        return services().claims.info(), None
    except FaucetError as problem:
        return services().claims.terms(), str(problem)
