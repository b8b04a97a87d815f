"""The command-line edge the bridge and the ingest share: logging, signals, the metrics
endpoint around the work, and errors turned into one sentence without a traceback."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

import redis

from bridge.endpoint import HealthServer
from bridge.metrics import Metrics
from pilotchain.errors import PilotChainError


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def guarded(prog: str, start: Callable[[], int]) -> int:
    """``start()``'s exit status; a user's error is printed as ``prog: sentence``."""
    try:
        return start()
    except PilotChainError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
    except redis.RedisError as error:
        # The loop retries what can pass; what reaches here will not (a lost password, say).
        print(f"{prog}: Redis failed: {error}. Check REDIS_URL, or REDIS_HOST, "
              "REDIS_PORT and REDIS_PASSWORD_FILE.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def serve(work: Callable[[Metrics, threading.Event], object], host: str, port: int,
          setting: str, logger: str) -> int:
    """Serve metrics on ``host:port`` and run ``work`` until SIGTERM or SIGINT; ``setting``
    names the port in a clash, ``logger`` says the signal arrived."""
    metrics = Metrics()
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        del frame
        logging.getLogger(logger).info("Stopping on signal %d.", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server = HealthServer(metrics, host, port, setting)
    server.start()
    try:
        work(metrics, stop)
    finally:
        server.stop()
    return 0
