"""``pilotchain-closer``: close every due slot of every metered participant on PilotChain.

The only place that reads the environment; errors a user can act on arrive as
PilotChainError and are printed as one sentence, without a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from closer.config import CloserSettings
from closer.service import Closer
from pilotchain.settings import load_environment
from worker.edge import guarded, serve, setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pilotchain-closer", description=__doc__.splitlines()[0],
        epilog="Settings come from the environment and .env; see docs/settings.md.")
    parser.parse_args(argv)
    setup_logging()
    return guarded("pilotchain-closer",
                   lambda: run(CloserSettings.from_env(load_environment())))


def run(settings: CloserSettings) -> int:
    """Serve metrics and close due slots until SIGTERM or SIGINT."""
    return serve(lambda metrics, stop: Closer(settings, metrics, stop),
                 settings.metrics_host, settings.metrics_port, "CLOSER_METRICS_PORT", "closer")
