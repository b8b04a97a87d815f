"""The portal web app's settings, declared once and read once by ``create_app``.

It also reads the chain settings (``RPC_URL``, ``CHAIN_ID``, ``EXPLORER_URL``,
``DEPLOYMENT_FILE``) and the index's (``PORTAL_DATABASE_URL``) through
:class:`~portal.config.PortalSettings`, and, for the operator's view of the dead letters, the
Redis settings and the bridge's and the ingest's stream names (the trade stream also for
gsy-e's names of the uuids, :mod:`portal.names`), declared in :mod:`pilotchain.config`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pilotchain.config import (
    BRIDGE_STREAM,
    DEFAULT_REDIS_URL,
    DEFAULT_TRADE_STREAM,
    DeadLetterStreams,
    RedisConnection,
)
from pilotchain.errors import ConfigError
from pilotchain.settings import Setting, SettingsGroup, local_url
from pilotchain.webmetrics import metrics_settings
from portal.config import PortalSettings
from portal.web.operations import Watched

MAX_PAGE_SIZE = 500
MAX_DEAD_LETTERS_SHOWN = 500
# The native stack's metrics endpoints: the bridge's, the ingest's and the slot closer's
# default BRIDGE_/INGEST_/CLOSER_METRICS_PORT (tests/test_portal_web.py holds them equal);
# runner.stack hands the portal the ports actually configured.
DEFAULT_HEALTH_URLS = {"bridge": "http://127.0.0.1:9108/health",
                       "ingest": "http://127.0.0.1:9110/health",
                       "ingest-mqtt": "http://127.0.0.1:9111/health",
                       "closer": "http://127.0.0.1:9112/health"}


@dataclass(frozen=True)
class WebSettings:
    """Everything the web app needs; the secret stays out of ``repr``."""

    index: PortalSettings = field(default_factory=PortalSettings)
    host: str = "127.0.0.1"
    port: int = 9200
    workers: int = 2
    threads: int = 4
    secret_key: str | None = field(default=None, repr=False)
    secret_file_override: Path | None = None
    domain: str | None = None
    secure_cookies: bool = True
    session_minutes: int = 60
    nonce_minutes: int = 10
    # Empty: "the grid operator", said in the page's language (German declines it).
    operator_contact: str = ""
    page_size: int = 50
    max_body_bytes: int = 16_384
    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)
    dead_letters: DeadLetterStreams = field(default_factory=DeadLetterStreams)
    # The bridge's trade stream, where gsy-e's names for the uuids are read (portal.names).
    trade_stream: str = DEFAULT_TRADE_STREAM
    bridge_health_url: str = DEFAULT_HEALTH_URLS["bridge"]
    ingest_health_url: str = DEFAULT_HEALTH_URLS["ingest"]
    ingest_mqtt_health_url: str = DEFAULT_HEALTH_URLS["ingest-mqtt"]
    closer_health_url: str = DEFAULT_HEALTH_URLS["closer"]
    health_timeout: float = 2.0
    dead_letters_shown: int = 50
    challenges_per_wallet: int = 5
    challenges_per_client: int = 20
    trusted_proxies: int = 0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9115
    metrics_dir_override: Path | None = None
    # Debian's fonts-dejavu-core (scripts/lib/install-test-deps.sh, ./scripts/up and the
    # app image install it).
    pdf_fonts: Path = Path("/usr/share/fonts/truetype/dejavu")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebSettings:
        """Read every PORTAL_* web setting (and the index's, the chain's, Redis's and the
        dead-letter streams' names)."""
        return cls(index=PortalSettings.from_env(env),
                   redis_url=RedisConnection.from_env(env).url,
                   dead_letters=DeadLetterStreams.from_env(env),
                   trade_stream=str(BRIDGE_STREAM.read(env)),
                   **PORTAL_WEB_SETTINGS.read(env))

    @property
    def watched(self) -> tuple[Watched, ...]:
        """The services whose health the operator sees."""
        return (Watched("bridge", self.bridge_health_url, "PORTAL_BRIDGE_HEALTH_URL"),
                Watched("ingest", self.ingest_health_url, "PORTAL_INGEST_HEALTH_URL"),
                Watched("MQTT subscriber", self.ingest_mqtt_health_url,
                        "PORTAL_INGEST_MQTT_HEALTH_URL"),
                Watched("closer", self.closer_health_url, "PORTAL_CLOSER_HEALTH_URL"))

    @property
    def metrics_url(self) -> str:
        """Where Prometheus scrapes ``/metrics`` on this machine."""
        return local_url(self.metrics_host, self.metrics_port)

    @property
    def metrics_dir(self) -> Path:
        """The gunicorn workers' metric files (emptied when gunicorn starts)."""
        return self.metrics_dir_override or self.index.chain.data_dir / "metrics" / "portal"

    @property
    def secret_file(self) -> Path:
        """Where the session secret is kept when PORTAL_SECRET_KEY is unset."""
        return self.secret_file_override or self.index.chain.data_dir / "portal-secret"

    @property
    def url(self) -> str:
        """Where a browser on this machine reaches the portal: ``localhost`` for a loopback
        address, the one plain-HTTP origin where browsers keep a Secure cookie."""
        host = "localhost" if self.host in {"0.0.0.0", "::", "", "127.0.0.1"} else self.host
        return f"http://{host}:{self.port}"

    @property
    def sign_in_domain(self) -> str:
        """The domain every sign-in message names and must name: PORTAL_DOMAIN, else (only
        for a portal on loopback, where ``check_domain`` allows it unset) localhost and the
        port. Never the request's Host: a phishing page that relays a signature made for its
        own domain must not get a session here."""
        return self.domain or f"localhost:{self.port}"

    @property
    def sign_in_uri(self) -> str:
        """The message's URI: https where a Secure cookie can only have come over HTTPS (a
        domain other than localhost), http on localhost or with Secure cookies switched off."""
        secure = self.secure_cookies and not is_loopback(host_of(self.sign_in_domain))
        return f"{'https' if secure else 'http'}://{self.sign_in_domain}/"


def host_of(domain: str) -> str:
    """The host of ``host[:port]`` (an IPv6 address in brackets without them)."""
    if domain.startswith("["):
        return domain[1:].partition("]")[0]
    return domain.rpartition(":")[0] if domain.count(":") == 1 else domain


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_domain(raw: str | None, env: Mapping[str, str]) -> str | None:
    """A host name with an optional port, as a browser's address bar shows it; required
    unless the portal listens on loopback only (then it is localhost and PORTAL_PORT)."""
    if raw is None:
        host = PORTAL_HOST.read(env)
        if not is_loopback(host):
            raise ConfigError(
                f"PORTAL_DOMAIN must be set when the portal listens on {host} (PORTAL_HOST): "
                "sign-in messages name the address people reach the portal at, such as "
                "portal.example.org or pilot.lan:9200, and the portal never takes it from "
                "the request.")
        return None
    domain = raw.strip().lower()
    if "/" in domain or " " in domain or not domain:
        raise ConfigError(f"PORTAL_DOMAIN must be a host name with an optional port, like "
                          f"portal.example.org or 127.0.0.1:9200, not {raw!r}.")
    return domain


def health_url_check(name: str) -> Callable[[str, Mapping[str, str]], str]:
    """The check of setting ``name``: an http(s) URL of a service's health endpoint."""

    def check(raw: str, env: Mapping[str, str]) -> str:
        del env
        url = raw.strip()
        if not url.startswith(("http://", "https://")) or " " in url:
            raise ConfigError(f"{name} must be an http:// or https:// URL such as "
                              f"{DEFAULT_HEALTH_URLS['bridge']}, not {raw!r}.")
        return url

    return check


def check_dead_letters_shown(value: int, env: Mapping[str, str]) -> int:
    del env
    if value > MAX_DEAD_LETTERS_SHOWN:
        raise ConfigError(f"PORTAL_DEAD_LETTERS_SHOWN must be at most {MAX_DEAD_LETTERS_SHOWN}, "
                          f"not {value}.")
    return value


def check_page_size(value: int, env: Mapping[str, str]) -> int:
    del env
    if value > MAX_PAGE_SIZE:
        raise ConfigError(f"PORTAL_PAGE_SIZE must be at most {MAX_PAGE_SIZE}, not {value}.")
    return value


_D = WebSettings()
PORTAL_HOST = Setting("PORTAL_HOST", "host", "str", _D.host,
                      "address gunicorn binds (`0.0.0.0` in a container)")
PORTAL_WEB_SETTINGS = SettingsGroup(
    "Portal web app", "portal-web",
    "The participant portal (gunicorn serving `portal.web.app:create_app()`) reads the index "
    "(`PORTAL_DATABASE_URL`), the chain settings, and for the operator's view the "
    "[Redis settings](#redis) and the dead-letter streams' names (`BRIDGE_STREAM`, "
    "`BRIDGE_DEAD_LETTER_STREAM`, `INGEST_STREAM`, `INGEST_DEAD_LETTER_STREAM`); see "
    "[docs/portal.md](portal.md).",
    (
        PORTAL_HOST,
        Setting("PORTAL_PORT", "port", "int", _D.port, "the port gunicorn listens on",
                minimum=1),
        Setting("PORTAL_WORKERS", "workers", "int", _D.workers, "gunicorn worker processes",
                minimum=1),
        Setting("PORTAL_THREADS", "threads", "int", _D.threads, "threads per worker",
                minimum=1),
        Setting("PORTAL_SECRET_KEY", "secret_key", "optional", None,
                "signs the session cookie; every worker must have the same", secret=True,
                default_text="(random, kept in PORTAL_SECRET_FILE)"),
        Setting("PORTAL_SECRET_FILE", "secret_file_override", "optional_path", None,
                "where the generated session secret is kept",
                default_text="<NATIVE_DATA_DIR>/portal-secret"),
        Setting("PORTAL_DOMAIN", "domain", "optional", None,
                "the host (and port) users reach the portal at; sign-in messages must name "
                "it. Required unless PORTAL_HOST is a loopback address",
                default_text="localhost:<PORTAL_PORT>", check=check_domain),
        Setting("PORTAL_SECURE_COOKIES", "secure_cookies", "bool", _D.secure_cookies,
                "send the session cookie over HTTPS only (browsers allow it on localhost too)"),
        Setting("PORTAL_SESSION_MINUTES", "session_minutes", "int", _D.session_minutes,
                "how long a sign-in lasts", minimum=1),
        Setting("PORTAL_NONCE_MINUTES", "nonce_minutes", "int", _D.nonce_minutes,
                "how long a sign-in message may wait for its signature", minimum=1),
        Setting("PORTAL_OPERATOR_CONTACT", "operator_contact", "str", _D.operator_contact,
                "whom a wallet that is not registered is told to ask (a name, an address); "
                "unset, the grid operator, in the page's language", default_text="(none)"),
        Setting("PORTAL_PAGE_SIZE", "page_size", "int", _D.page_size,
                "trades per page unless the request asks for another number (at most 500)",
                minimum=1, check=check_page_size),
        Setting("PORTAL_MAX_BODY_BYTES", "max_body_bytes", "int", _D.max_body_bytes,
                "largest request body accepted", minimum=1024),
        Setting("PORTAL_BRIDGE_HEALTH_URL", "bridge_health_url", "str", _D.bridge_health_url,
                "the bridge's `/health`, shown to the operator (`./scripts/up` passes the "
                "configured BRIDGE_METRICS_PORT's)",
                check=health_url_check("PORTAL_BRIDGE_HEALTH_URL")),
        Setting("PORTAL_INGEST_HEALTH_URL", "ingest_health_url", "str", _D.ingest_health_url,
                "the ingest writer's `/health` (`./scripts/up` passes INGEST_METRICS_PORT's)",
                check=health_url_check("PORTAL_INGEST_HEALTH_URL")),
        Setting("PORTAL_INGEST_MQTT_HEALTH_URL", "ingest_mqtt_health_url", "str",
                _D.ingest_mqtt_health_url,
                "the ingest's MQTT subscriber's `/health` (`./scripts/up` passes "
                "INGEST_MQTT_METRICS_PORT's)",
                check=health_url_check("PORTAL_INGEST_MQTT_HEALTH_URL")),
        Setting("PORTAL_CLOSER_HEALTH_URL", "closer_health_url", "str", _D.closer_health_url,
                "the slot closer's `/health` (`./scripts/up` passes CLOSER_METRICS_PORT's)",
                check=health_url_check("PORTAL_CLOSER_HEALTH_URL")),
        Setting("PORTAL_HEALTH_TIMEOUT", "health_timeout", "float", _D.health_timeout,
                "seconds the operator's view waits for a service's `/health` or for Redis",
                minimum=0.1),
        Setting("PORTAL_DEAD_LETTERS_SHOWN", "dead_letters_shown", "int",
                _D.dead_letters_shown,
                "newest dead-lettered entries shown per stream (at most 500)", minimum=1,
                check=check_dead_letters_shown),
        Setting("PORTAL_CHALLENGES_PER_WALLET", "challenges_per_wallet", "int",
                _D.challenges_per_wallet,
                "sign-in messages kept waiting for one wallet's signature; a newer one "
                "replaces the oldest", minimum=1),
        Setting("PORTAL_CHALLENGES_PER_CLIENT", "challenges_per_client", "int",
                _D.challenges_per_client,
                "sign-in messages one client (an IPv4 address, an IPv6 /64) may have waiting; "
                "more are refused (429) until the oldest expires", minimum=1),
        Setting("PORTAL_TRUSTED_PROXIES", "trusted_proxies", "int", _D.trusted_proxies,
                "reverse proxies in front of the portal whose `X-Forwarded-For` and "
                "`X-Forwarded-Proto` are believed", minimum=0),
        *metrics_settings("PORTAL", "portal", host=_D.metrics_host, port=_D.metrics_port,
                          public_port=_D.port),
        Setting("PORTAL_PDF_FONTS", "pdf_fonts", "path", _D.pdf_fonts,
                "a directory holding DejaVuSans.ttf and DejaVuSans-Bold.ttf (Debian's "
                "fonts-dejavu-core), embedded in PDF statements so names in any European "
                "script print; without them statements print Latin-1 only, `?` for the rest"),
    ),
)
