"""The participant portal's web app: sign-in with a wallet, each participant's energy, trades
and bill, the operator's back office.

Served by gunicorn: ``gunicorn 'portal.web.app:create_app()'`` (``runner.portal`` runs it for
``./scripts/up``). Settings: ``portal.web.config``.

The application lives in ``portal.web.app``, not here: ``pilotchain`` imports
``portal.web.config`` for its settings reference, and a package's ``__init__`` runs on every
import from it (the app's Flask and PDF imports cost every command half a second).
"""
