"""What ``./scripts/up`` runs on top of the chain, behind one small interface.

Each service (the contract deployment, Redis, the bridge, the faucet) has an adapter in this
package implementing :class:`Service`; those that are processes share
:class:`BackgroundService`, which starts, waits for readiness and stops them the same way,
and those ready once their metrics endpoint says so share :class:`MetricsService`.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import requests

from pilotchain.chain import wait_for
from pilotchain.errors import ChainError, PilotChainError
from pilotchain.settings import PROJECT_ROOT
from runner.localnet import LocalNetwork
from runner.ports import check_port_free
from runner.processes import ManagedProcess, log_tail


class ServiceError(PilotChainError):
    """A service of the native stack could not be started."""


class Service(Protocol):
    """Something the native stack runs on top of the chain.

    ``start`` is idempotent and returns once the service is ready; ``status`` returns the
    keys it adds to ``./scripts/status --json``.
    """

    name: str

    def start(self, net: LocalNetwork | None = None) -> bool:
        """Start (or deploy) if needed; True if anything was started."""
        ...

    def stop(self) -> bool:
        """Stop; True if it stopped cleanly."""
        ...

    def status(self) -> dict[str, Any]: ...


class BackgroundService:
    """A process that outlives ``./scripts/up``: started once, found again by its pid file.

    Subclasses give the command line (:meth:`argv`) and a readiness probe (:meth:`probe`);
    ``port`` (host, port, setting) is checked before starting so a clash names the setting.
    """

    name: str = "service"
    start_timeout: float = 60.0
    stop_timeout: float = 30.0
    # Whether services after this one need it ready when they start (Redis, the broker, the
    # portal's index, which the web app would otherwise migrate alongside): the stack awaits
    # it before it starts the next, and stops it after those. The others start side by side.
    others_need_it: bool = False

    def __init__(self, state_dir: Path, env: Mapping[str, str], *,
                 port: tuple[str, int, str] | None = None) -> None:
        self.env = dict(env)
        self.process = ManagedProcess(self.name, state_dir)
        self.marker = str(state_dir.resolve() / self.name)
        self.log_file = state_dir.parent / "logs" / f"{self.name}.log"
        self.port = port
        self.cwd = PROJECT_ROOT
        self.last_answer = ""

    def argv(self) -> Sequence[str]:
        raise NotImplementedError

    def probe(self) -> bool:
        """True once the service answers as ready; may note what it said in last_answer."""
        raise NotImplementedError

    def process_env(self, net: LocalNetwork | None) -> dict[str, str]:
        """The environment of the process: the snapshot given, with the network's RPC URL
        unless RPC_URL names another node."""
        env = dict(self.env)
        if net is not None and not env.get("RPC_URL"):
            env["RPC_URL"] = net.rpc_url
        return env

    def start(self, net: LocalNetwork | None = None) -> bool:
        """Start unless running; return once ready (True if it was started)."""
        launched = self.launch(net)
        if launched:
            self.wait_ready()
        return launched

    def launch(self, net: LocalNetwork | None = None) -> bool:
        """Start the process unless it runs, without waiting for it to be ready (True if it
        was started): ``./scripts/up`` starts services side by side, then awaits each."""
        if self.process.is_running():
            return False
        if self.port is not None:
            host, port, setting = self.port
            check_port_free(port, setting, host, socket.SOCK_STREAM)
        self.process.start(self.argv(), marker=self.marker, log_file=self.log_file,
                           env=self.process_env(net), cwd=self.cwd)
        return True

    def wait_ready(self) -> None:
        """Poll :meth:`probe`; fail with the end of the log if the process exits."""
        try:
            wait_for(self._ready, timeout=self.start_timeout, what=f"the {self.name} to start")
        except ChainError:
            said = f" Its last answer: {self.last_answer}" if self.last_answer else ""
            raise ServiceError(
                f"The {self.name} did not become ready within {self.start_timeout:.0f} s.{said} "
                f"See {self.log_file}."
            ) from None

    def _ready(self) -> bool:
        if not self.process.is_running():
            raise ServiceError(f"The {self.name} exited while starting. End of its log:\n"
                               f"{log_tail(self.log_file)}")
        return self.probe()

    def stop(self) -> bool:
        """SIGTERM and wait (the process finishes what it holds); True if it stopped cleanly."""
        return self.process.stop(timeout=self.stop_timeout)


class MetricsSettings(Protocol):
    """Where a service's metrics endpoint listens (``/metrics``, ``/status``, ``/health``)."""

    @property
    def metrics_host(self) -> str: ...
    @property
    def metrics_port(self) -> int: ...
    @property
    def metrics_url(self) -> str: ...


class MetricsService(BackgroundService):
    """A ``python -m`` process serving metrics; ready once its ``/health`` answers 200."""

    start_timeout = 90.0
    command: tuple[str, ...] = ()  # after ``python -m``
    port_setting = ""  # the setting that names the metrics port, for a clash

    def __init__(self, settings: MetricsSettings, env: Mapping[str, str],
                 state_dir: Path) -> None:
        port = (settings.metrics_host, settings.metrics_port, self.port_setting)
        super().__init__(state_dir, env, port=port if settings.metrics_port else None)
        self.metrics_url = settings.metrics_url

    def argv(self) -> list[str]:
        return [sys.executable, "-m", *self.command]

    def probe(self) -> bool:
        try:
            reply = requests.get(f"{self.metrics_url}/health", timeout=2)
            if reply.status_code == 200:
                return True
            body = reply.json()
            self.last_answer = str(body.get("problem") or body.get("status", ""))
        except (requests.RequestException, ValueError):
            pass
        return False

    def status(self) -> dict[str, Any]:
        """Where Prometheus scrapes it, and where its progress reads as JSON."""
        key = self.name.replace("-", "_")
        return {f"{key}_metrics_url": f"{self.metrics_url}/metrics",
                f"{key}_status_url": f"{self.metrics_url}/status"}


class ServedSettings(Protocol):
    """What a gunicorn-served app's settings give its adapter."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def workers(self) -> int: ...
    @property
    def url(self) -> str: ...


S = TypeVar("S", bound=ServedSettings)


class GunicornService(BackgroundService, Generic[S]):
    """A Flask app factory (``app``) served by gunicorn, ready once ``health_path`` answers
    200; ``env`` is the environment its workers read their settings from (the same snapshot
    ``settings`` was built from, .env included). An app with a gunicorn configuration module
    (``config``) binds its addresses from its settings there."""

    app: str
    port_setting: str
    health_path = "/health"
    status_key: str
    config: str | None = None

    def __init__(self, settings: S, state_dir: Path, env: Mapping[str, str]) -> None:
        super().__init__(state_dir, env, port=(settings.host, settings.port, self.port_setting))
        self.settings = settings

    @property
    def url(self) -> str:
        return self.settings.url

    def worker_args(self) -> tuple[str, ...]:
        """gunicorn's worker options beyond their number (sync workers by default)."""
        return ()

    def argv(self) -> list[str]:
        s = self.settings
        if self.config is not None:
            return gunicorn_argv(self.app, None, s.port, s.workers, "--config",
                                 f"python:{self.config}", *self.worker_args())
        return gunicorn_argv(self.app, s.host, s.port, s.workers, *self.worker_args())

    def probe(self) -> bool:
        return answers_ok(self, f"{self.url}{self.health_path}")

    def status(self) -> dict[str, Any]:
        return {self.status_key: self.url}


class ScrapedSettings(ServedSettings, Protocol):
    """A gunicorn-served app with a metrics port of its own."""

    @property
    def metrics_host(self) -> str: ...
    @property
    def metrics_port(self) -> int: ...
    @property
    def metrics_url(self) -> str: ...


M = TypeVar("M", bound=ScrapedSettings)


class ScrapedGunicornService(GunicornService[M]):
    """A gunicorn-served app whose ``/metrics`` is on a port of its own (``metrics_setting``),
    bound with the public one by its configuration module; both checked free before start."""

    metrics_setting: str

    def launch(self, net: LocalNetwork | None = None) -> bool:
        s = self.settings
        if s.metrics_port and not self.process.is_running():
            check_port_free(s.metrics_port, self.metrics_setting, s.metrics_host,
                            socket.SOCK_STREAM)
        return super().launch(net)

    def status(self) -> dict[str, Any]:
        found = super().status()
        if self.settings.metrics_port:
            found[f"{self.name}_metrics_url"] = f"{self.settings.metrics_url}/metrics"
        return found


def gthread(threads: int) -> tuple[str, ...]:
    """gunicorn options for gthread workers of ``threads`` threads each."""
    return ("--worker-class", "gthread", "--threads", str(threads))


def gunicorn_argv(app: str, host: str | None, port: int, workers: int, *extra: str
                  ) -> list[str]:
    """The command line of a Flask app factory served by gunicorn, logging to its output
    (``host`` None: the configuration module in ``extra`` binds)."""
    bind = [] if host is None else ["--bind", f"{host}:{port}"]
    return [
        sys.executable, "-m", "gunicorn",
        *bind, "--workers", str(workers), *extra,
        "--chdir", str(PROJECT_ROOT),
        "--access-logfile", "-", "--error-logfile", "-",
        "--graceful-timeout", "10", "--timeout", "60",
        app,
    ]


def answers_ok(service: BackgroundService, url: str) -> bool:
    """True once ``url`` answers 200; keeps any other answer in ``service.last_answer``."""
    try:
        response = requests.get(url, timeout=5)
    except requests.RequestException:
        return False
    if response.status_code != 200:
        service.last_answer = response.text.strip()[:300]
    return response.status_code == 200
