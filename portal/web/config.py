"""The portal web app's settings, declared once and read once by ``create_app``.

It also reads the chain settings (``RPC_URL``, ``CHAIN_ID``, ``EXPLORER_URL``,
``DEPLOYMENT_FILE``) and the index's (``PORTAL_DATABASE_URL``) through
:class:`~portal.config.PortalSettings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pilotchain.errors import ConfigError
from pilotchain.settings import Setting, SettingsGroup
from portal.config import PortalSettings

MAX_PAGE_SIZE = 500


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
    operator_contact: str = "the grid operator"
    page_size: int = 50
    max_body_bytes: int = 16_384

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebSettings:
        """Read every PORTAL_* web setting (and the index's and chain's)."""
        return cls(index=PortalSettings.from_env(env), **PORTAL_WEB_SETTINGS.read(env))

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


def check_domain(raw: str | None, env: Mapping[str, str]) -> str | None:
    """A host name with an optional port, as a browser's address bar shows it."""
    del env
    if raw is None:
        return None
    domain = raw.strip().lower()
    if "/" in domain or " " in domain or not domain:
        raise ConfigError(f"PORTAL_DOMAIN must be a host name with an optional port, like "
                          f"portal.example.org or 127.0.0.1:9200, not {raw!r}.")
    return domain


def check_page_size(value: int, env: Mapping[str, str]) -> int:
    del env
    if value > MAX_PAGE_SIZE:
        raise ConfigError(f"PORTAL_PAGE_SIZE must be at most {MAX_PAGE_SIZE}, not {value}.")
    return value


_D = WebSettings()
PORTAL_WEB_SETTINGS = SettingsGroup(
    "Portal web app", "portal-web",
    "The participant portal (gunicorn serving `portal.web:create_app()`) reads the index "
    "(`PORTAL_DATABASE_URL`) and the chain settings; see [docs/portal.md](portal.md).",
    (
        Setting("PORTAL_HOST", "host", "str", _D.host,
                "address gunicorn binds (`0.0.0.0` in a container)"),
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
                "the host (and port) users reach the portal at; sign-in messages must name it",
                default_text="(the Host the browser used)", check=check_domain),
        Setting("PORTAL_SECURE_COOKIES", "secure_cookies", "bool", _D.secure_cookies,
                "send the session cookie over HTTPS only (browsers allow it on localhost too)"),
        Setting("PORTAL_SESSION_MINUTES", "session_minutes", "int", _D.session_minutes,
                "how long a sign-in lasts", minimum=1),
        Setting("PORTAL_NONCE_MINUTES", "nonce_minutes", "int", _D.nonce_minutes,
                "how long a sign-in message may wait for its signature", minimum=1),
        Setting("PORTAL_OPERATOR_CONTACT", "operator_contact", "str", _D.operator_contact,
                "whom a wallet that is not registered is told to ask"),
        Setting("PORTAL_PAGE_SIZE", "page_size", "int", _D.page_size,
                "trades per page unless the request asks for another number (at most 500)",
                minimum=1, check=check_page_size),
        Setting("PORTAL_MAX_BODY_BYTES", "max_body_bytes", "int", _D.max_body_bytes,
                "largest request body accepted", minimum=1024),
    ),
)
