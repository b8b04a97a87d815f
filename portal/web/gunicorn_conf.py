"""gunicorn's configuration of the portal, from its settings:
``gunicorn --config python:portal.web.gunicorn_conf 'portal.web.app:create_app()'`` binds
PORTAL_HOST:PORTAL_PORT (the pages and the API) and PORTAL_METRICS_HOST:PORTAL_METRICS_PORT
(``/metrics`` only), with prometheus_client's multiprocess mode in PORTAL_METRICS_DIR
(:mod:`pilotchain.gunicorn_hooks`). Workers, threads and timeouts stay on the command line."""

from __future__ import annotations

from pilotchain.gunicorn_hooks import configure
from pilotchain.settings import load_environment
from portal.web.config import WebSettings

_settings = WebSettings.from_env(load_environment())
globals().update(configure(_settings.host, _settings.port, _settings.metrics_host,
                           _settings.metrics_port, _settings.metrics_dir))
