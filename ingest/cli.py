"""``pilotchain-ingest``: settle signed meter readings from the Redis stream on PilotChain.

``pilotchain-ingest --mqtt`` runs the MQTT subscriber instead, which feeds that stream.

The only place that reads the environment; errors a user can act on arrive as
PilotChainError and are printed as one sentence, without a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ingest.config import IngestSettings, MqttSettings
from ingest.mqtt import Subscriber
from ingest.pipeline import Ingest
from pilotchain.settings import load_environment
from worker.edge import guarded, serve, setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pilotchain-ingest", description=__doc__.splitlines()[0],
        epilog="Settings come from the environment and .env; see docs/settings.md.")
    parser.add_argument("--mqtt", action="store_true",
                        help="run the MQTT subscriber (broker to stream), not the writer")
    args = parser.parse_args(argv)
    setup_logging()

    def start() -> int:
        env = load_environment()
        if args.mqtt:
            return run_subscriber(MqttSettings.from_env(env))
        return run(IngestSettings.from_env(env))

    return guarded("pilotchain-ingest", start)


def run_subscriber(settings: MqttSettings) -> int:
    """Serve metrics and run the MQTT subscriber until SIGTERM or SIGINT."""
    return serve(lambda metrics, stop: Subscriber(settings, metrics, stop),
                 settings.metrics_host, settings.metrics_port, "INGEST_MQTT_METRICS_PORT",
                 "ingest")


def run(settings: IngestSettings) -> int:
    """Serve metrics and run the ingest until SIGTERM or SIGINT."""
    return serve(lambda metrics, stop: Ingest(settings, metrics, stop),
                 settings.metrics_host, settings.metrics_port, "INGEST_METRICS_PORT", "ingest")
