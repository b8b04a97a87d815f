"""``pilotchain-ingest``: settle signed meter readings from the Redis stream on PilotChain.

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
from ingest.config import IngestSettings
from ingest.pipeline import Ingest
from pilotchain.errors import PilotChainError
from pilotchain.settings import load_environment


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pilotchain-ingest", description=__doc__.splitlines()[0],
        epilog="Settings come from the environment and .env; see docs/settings.md.")
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(IngestSettings.from_env(load_environment()))
    except PilotChainError as error:
        print(f"pilotchain-ingest: {error}", file=sys.stderr)
        return 1
    except redis.RedisError as error:
        print(f"pilotchain-ingest: Redis failed: {error}. Check REDIS_URL, or REDIS_HOST, "
              "REDIS_PORT and REDIS_PASSWORD_FILE.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run(settings: IngestSettings) -> int:
    """Serve metrics and run the ingest until SIGTERM or SIGINT."""
    metrics = Metrics()
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        del frame
        logging.getLogger("ingest").info("Stopping on signal %d.", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server = HealthServer(metrics, settings.metrics_host, settings.metrics_port)
    server.start()
    try:
        Ingest(settings, metrics, stop).run()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
