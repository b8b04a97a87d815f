"""gunicorn's configuration of the faucet, from its settings:
``gunicorn --config python:faucet.gunicorn_conf 'faucet.app:create_app()'`` binds FAUCET_HOST:
FAUCET_PORT (the public page and API) and FAUCET_METRICS_HOST:FAUCET_METRICS_PORT
(``/metrics`` only), with prometheus_client's multiprocess mode in FAUCET_METRICS_DIR
(:mod:`pilotchain.gunicorn_hooks`). Workers, threads and timeouts stay on the command line."""

from __future__ import annotations

from faucet.config import FaucetSettings
from pilotchain.gunicorn_hooks import configure
from pilotchain.settings import load_environment

_settings = FaucetSettings.from_env(load_environment())
globals().update(configure(_settings.host, _settings.port, _settings.metrics_host,
                           _settings.metrics_port, _settings.metrics_dir))
