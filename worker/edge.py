"""The command-line edge every worker service shares (the bridge, the ingest, its MQTT
subscriber, the slot closer): logging, signals, the metrics endpoint around the work, and
errors turned into one sentence without a traceback."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Protocol

import redis

from pilotchain.errors import PilotChainError
from worker.endpoint import HealthServer
from worker.metrics import Metrics


class Service(Protocol):
    """A service's work: ``run`` returns once the stop event it was given is set."""

    def run(self) -> None: ...


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


def serve(make: Callable[[Metrics, threading.Event], Service], host: str, port: int,
          setting: str, logger: str) -> int:
    """Serve metrics on ``host:port`` and run the service ``make`` builds until SIGTERM or
    SIGINT; ``setting`` names the port in a clash, ``logger`` says the signal arrived. The
    service is built first, so the endpoint answers only with what it declared it measures."""
    metrics = Metrics()
    stop = threading.Event()
    service = make(metrics, stop)

    def request_stop(signum: int, frame: FrameType | None) -> None:
        del frame
        logging.getLogger(logger).info("Stopping on signal %d.", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server = HealthServer(metrics, host, port, setting)
    server.start()
    try:
        service.run()
    finally:
        server.stop()
    return 0
