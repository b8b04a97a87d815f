"""``pilotchain-ingest``: settle signed meter readings from the Redis stream on PilotChain.

``pilotchain-ingest --mqtt`` runs the MQTT subscriber instead, which feeds that stream.

The only place that reads the environment; errors a user can act on arrive as
PilotChainError and are printed as one sentence, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

import redis

from bridge.health import HealthServer
from bridge.metrics import Metrics
from ingest.config import IngestSettings, MqttSettings
from ingest.mqtt import Subscriber
from ingest.pipeline import Ingest
from pilotchain.errors import PilotChainError
from pilotchain.settings import load_environment


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pilotchain-ingest", description=__doc__.splitlines()[0],
        epilog="Settings come from the environment and .env; see docs/settings.md.")
    parser.add_argument("--mqtt", action="store_true",
                        help="run the MQTT subscriber (broker to stream), not the writer")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        env = load_environment()
        if args.mqtt:
            return run_subscriber(MqttSettings.from_env(env))
        return run(IngestSettings.from_env(env))
    except PilotChainError as error:
        print(f"pilotchain-ingest: {error}", file=sys.stderr)
        return 1
    except redis.RedisError as error:
        print(f"pilotchain-ingest: Redis failed: {error}. Check REDIS_URL, or REDIS_HOST, "
              "REDIS_PORT and REDIS_PASSWORD_FILE.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        del frame
        logging.getLogger("ingest").info("Stopping on signal %d.", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def run_subscriber(settings: MqttSettings) -> int:
    """Serve metrics and run the MQTT subscriber until SIGTERM or SIGINT."""
    metrics = Metrics()
    stop = _stop_on_signals()
    server = HealthServer(metrics, settings.metrics_host, settings.metrics_port,
                          "INGEST_MQTT_METRICS_PORT")
    server.start()
    try:
        Subscriber(settings, metrics, stop).run()
    finally:
        server.stop()
    return 0


def run(settings: IngestSettings) -> int:
    """Serve metrics and run the ingest until SIGTERM or SIGINT."""
    metrics = Metrics()
    stop = _stop_on_signals()
    server = HealthServer(metrics, settings.metrics_host, settings.metrics_port,
                          "INGEST_METRICS_PORT")
    server.start()
    try:
        Ingest(settings, metrics, stop).run()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
