"""Prometheus metrics of a web app under gunicorn (the faucet, the portal), on a port of their
own.

The public port serves the app and never ``/metrics``; the metrics port (``*_METRICS_HOST``,
``*_METRICS_PORT``: loopback natively, an internal network in Compose) serves ``/metrics``
and nothing else. Which port a request came in on is read from the connection's own socket
(``gunicorn.socket``), never from a header, so no request to the public port can reach the
metrics or pass for a scrape.

Labels are bounded whatever anyone sends: a request is labelled with its route's template
(``/api/participants/<participant>/trades``, or ``(unmatched)``), its method (the standard
ones, else ``other``) and its status class (``2xx`` ... ``5xx``), never with a raw path.

Under gunicorn each worker is a process: counters and histograms go to files in
``PROMETHEUS_MULTIPROC_DIR`` (:mod:`pilotchain.gunicorn_hooks` sets it from the service's
setting) and the worker answering a scrape sums them all. Values only known at scrape time
(the faucet's balance, the portal's index lag) come from ``live`` collectors, read by that
worker alone. Without the variable (tests on Flask's client), each app keeps its own registry.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from flask import Flask, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from pilotchain.errors import ConfigError
from pilotchain.gunicorn_hooks import MULTIPROCESS_VARIABLE
from pilotchain.settings import Setting

# What generate_latest writes (the text format 0.0.4, which every Prometheus reads), as the
# other services' endpoints say it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "(unmatched)"
ROUTE_KEY = "pilotchain.route"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# From a static file (milliseconds) to a claim waiting for the send lock (seconds).
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
NOT_HERE = b"Only /metrics is served on this port.\n"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def metrics_port_check(name: str, public: str, default: int
                       ) -> Callable[[int, Mapping[str, str]], int]:
    """The check of setting ``name`` (a metrics port): not the public port (setting
    ``public``, ``default`` when unset), which must never serve the metrics."""

    def check(port: int, env: Mapping[str, str]) -> int:
        given = env.get(public, "").strip()
        if port and str(port) == (given or str(default)):
            raise ConfigError(f"{name} must differ from {public} ({port}): the metrics have a "
                              "port of their own, never the public one.")
        return port

    return check


def metrics_settings(prefix: str, service: str, *, host: str, port: int, public_port: int
                     ) -> tuple[Setting, Setting, Setting]:
    """``<prefix>_METRICS_HOST``, ``_PORT`` and ``_DIR`` of a gunicorn-served ``service``
    whose public port is ``<prefix>_PORT`` (default ``public_port``)."""
    name = f"{prefix}_METRICS_PORT"
    return (
        Setting(f"{prefix}_METRICS_HOST", "metrics_host", "str", host,
                "address of the metrics port (`/metrics` only, for Prometheus): loopback or "
                "a private address, never a public one (`0.0.0.0` in a container, where the "
                "port is not published)"),
        Setting(name, "metrics_port", "int", port,
                "the metrics port, apart from the public one (`0` switches metrics off)",
                minimum=0, check=metrics_port_check(name, f"{prefix}_PORT", public_port)),
        Setting(f"{prefix}_METRICS_DIR", "metrics_dir_override", "optional_path", None,
                "where gunicorn's workers keep their metrics (prometheus_client's "
                f"multiprocess mode; emptied when the {service} starts)",
                default_text=f"<NATIVE_DATA_DIR>/metrics/{service}"),
    )


def multiprocess_directory() -> str | None:
    """Where gunicorn's workers keep their samples, or None outside multiprocess mode."""
    return os.environ.get(MULTIPROCESS_VARIABLE) or None


def status_class(status: str) -> str:
    """``"404 NOT FOUND"`` -> ``"4xx"``."""
    code = status[:1]
    return f"{code}xx" if code in "12345" and code else "other"


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def local_port(environ: dict[str, Any]) -> int | None:
    """The port of this server the request came in on: the connection's own socket under
    gunicorn (a header cannot change it), else the WSGI server's SERVER_PORT."""
    sock = environ.get("gunicorn.socket")
    try:
        if sock is not None:
            return int(sock.getsockname()[1])
        return int(environ.get("SERVER_PORT", ""))
    except (OSError, ValueError, TypeError, IndexError):
        return None


class AppMetrics:
    """One app's metrics: the HTTP request histogram, the app's own counters, the live
    collectors and the ``/metrics`` answer for the metrics port."""

    def __init__(self, metrics_port: int, live: Sequence[Collector] = ()) -> None:
        self.metrics_port = metrics_port
        self.live = list(live)
        # The app's own registry: several apps in one process (tests) never clash, and in
        # multiprocess mode the values go to files whatever registry holds them.
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in self.live:
            self.registry.register(collector)
        self.requests = Histogram(
            "pilotchain_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status class",
            ("route", "method", "status_class"), buckets=HTTP_BUCKETS, registry=self.registry)

    def counter(self, name: str, documentation: str, labels: Sequence[str] = (),
                values: Iterable[Sequence[str]] = ()) -> Counter:
        """A counter of this app; each of ``values`` (label values) starts at 0, so a rate is
        defined before the first event."""
        counter = Counter(name, documentation, tuple(labels), registry=self.registry)
        for labelled in values:
            counter.labels(*labelled)
        return counter

    def install(self, app: Flask) -> None:
        """Time every request of ``app`` and answer the metrics port with ``/metrics``: the
        WSGI wrapper outermost, and a first ``before_request`` noting the matched route's
        template where the wrapper finds it (Flask clears its request from the environment
        when it is done)."""
        app.before_request_funcs.setdefault(None, []).insert(0, note_route)
        app.wsgi_app = Middleware(app.wsgi_app, self)  # type: ignore[method-assign]

    def exposition(self) -> bytes:
        """Every sample in Prometheus's text format: all workers' counters and histograms
        (multiprocess mode) or this app's, and the live collectors read now."""
        directory = multiprocess_directory()
        if directory is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        for collector in self.live:
            registry.register(collector)
        return generate_latest(registry)


def note_route() -> None:
    """The template of the route Flask matched (none for a 404 or 405), for the wrapper."""
    if request.url_rule is not None:
        request.environ[ROUTE_KEY] = request.url_rule.rule


class Middleware:
    """The WSGI wrapper: the metrics port gets ``/metrics`` (or 404), every other request is
    timed under its route's template."""

    def __init__(self, app: WsgiApp, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        if self.metrics.metrics_port and local_port(environ) == self.metrics.metrics_port:
            return self.scrape(environ, start_response)
        began = time.perf_counter()
        seen: list[str] = []

        def recording_start(status: str, headers: list[tuple[str, str]],
                            exc_info: Any = None) -> Any:
            seen[:] = [status]
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, recording_start)
        finally:
            self.metrics.requests.labels(
                environ.get(ROUTE_KEY, UNMATCHED), method_label(environ.get("REQUEST_METHOD", "")),
                status_class(seen[0]) if seen else "5xx",
            ).observe(time.perf_counter() - began)

    def scrape(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        if environ.get("PATH_INFO") != "/metrics" or environ.get("REQUEST_METHOD") != "GET":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                             ("Content-Length", str(len(NOT_HERE)))])
            return [NOT_HERE]
        body = self.metrics.exposition()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE),
                                  ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])
        return [body]


class Cached:
    """A value read at most once per ``max_age`` seconds (per process): scrapes, however
    frequent, cost the node or the database one read per interval. ``read`` answers None
    when it cannot read (the live gauge then says so); that is tried again at the next
    scrape."""

    def __init__(self, read: Callable[[], Any], max_age: float) -> None:
        self.read = read
        self.max_age = max_age
        self._at = -max_age
        self._value: Any = None

    def get(self) -> Any:
        now = time.monotonic()
        if now - self._at >= self.max_age or self._value is None:
            self._value = self.read()
            self._at = now
        return self._value


def families(collect: Callable[[], Iterator[Any]]) -> Collector:
    """A collector from a generator function of metric families."""

    class _Live(Collector):
        def collect(self) -> Iterator[Any]:
            return collect()

        def describe(self) -> list[Any]:
            """Nothing: registering must not read the chain (auto_describe would collect)."""
            return []

    return _Live()
