"""``pilotchain-bridge``: settle gsy-e trades from the Redis Stream on PilotChain.

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

from bridge.config import BridgeSettings
from bridge.health import HealthServer
from bridge.metrics import Metrics
from bridge.pipeline import Bridge
from pilotchain.errors import PilotChainError
from pilotchain.settings import load_environment


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pilotchain-bridge", description=__doc__.splitlines()[0],
        epilog="Settings come from the environment and .env; see docs/settings.md.")
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = BridgeSettings.from_env(load_environment())
        return run(settings)
    except PilotChainError as error:
        print(f"pilotchain-bridge: {error}", file=sys.stderr)
        return 1
    except redis.RedisError as error:
        # The loop retries what can pass; what reaches here will not (a lost password, say).
        print(f"pilotchain-bridge: Redis failed: {error}. Check REDIS_URL, or REDIS_HOST, "
              "REDIS_PORT and REDIS_PASSWORD_FILE.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run(settings: BridgeSettings) -> int:
    """Serve metrics and run the bridge until SIGTERM or SIGINT."""
    metrics = Metrics()
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        del frame
        logging.getLogger("bridge").info("Stopping on signal %d.", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server = HealthServer(metrics, settings.metrics_host, settings.metrics_port)
    server.start()
    try:
        Bridge(settings, metrics, stop).run()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
