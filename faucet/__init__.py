"""PilotChain's faucet: test funds for any wallet from a web page and a JSON API.

Served by gunicorn: ``gunicorn 'faucet.app:create_app()'`` (``runner.faucet`` runs it for
``./scripts/up``). Settings: ``faucet.config``; the shared service layer: ``faucet.claims``;
the OpenAPI description (served at ``/openapi.json``): ``faucet.openapi``.

The application lives in ``faucet.app``, not here: ``pilotchain`` imports ``faucet.config``
for its settings reference, and a package's ``__init__`` runs on every import from it (the
app's Flask, Redis and limiter imports cost every command half a second).
"""
