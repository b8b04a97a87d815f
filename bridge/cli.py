"""``pilotchain-bridge``: settle gsy-e trades from the Redis Stream on PilotChain.

The only place that reads the environment; errors a user can act on arrive as
PilotChainError and are printed as one sentence, without a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from bridge.config import BridgeSettings
from bridge.pipeline import Bridge
from pilotchain.settings import load_environment
from worker.edge import guarded, serve, setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pilotchain-bridge", description=__doc__.splitlines()[0],
        epilog="Settings come from the environment and .env; see docs/settings.md.")
    parser.parse_args(argv)
    setup_logging()
    return guarded("pilotchain-bridge",
                   lambda: run(BridgeSettings.from_env(load_environment())))


def run(settings: BridgeSettings) -> int:
    """Serve metrics and run the bridge until SIGTERM or SIGINT."""
    return serve(lambda metrics, stop: Bridge(settings, metrics, stop),
                 settings.metrics_host, settings.metrics_port, "BRIDGE_METRICS_PORT", "bridge")
