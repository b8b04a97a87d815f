"""What every PilotChain web page (the faucet's, the portal's) sends with itself.

The pages load nothing from elsewhere (pilots may be offline): a strict policy costs nothing
and blocks injected scripts and framing.
"""

from __future__ import annotations

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data:; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
