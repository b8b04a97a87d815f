"""The portal indexer's typed settings, declared once and read once by the entry point.

Chain and the deployment record come from :class:`ChainSettings` (``RPC_URL``,
``DEPLOYMENT_FILE``, ...), like every service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pilotchain.config import CHAIN_SETTINGS, ChainSettings, masked_url
from pilotchain.errors import ConfigError
from pilotchain.settings import PROJECT_ROOT, Setting, SettingsGroup

SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class PortalSettings:
    """Everything the indexer needs; ``database_url`` may hold a password, so it stays out
    of ``repr`` (and logs)."""

    chain: ChainSettings = field(default_factory=ChainSettings)
    database_url_override: str | None = field(default=None, repr=False)
    confirmations: int = 2
    max_reorg_depth: int = 64
    page_blocks: int = 500
    poll_interval: float = 1.0
    rpc_timeout_seconds: float = 10.0
    backoff_max: float = 10.0

    @property
    def database_url(self) -> str:
        """The database: PORTAL_DATABASE_URL, else a SQLite file beside the chain data."""
        return self.database_url_override or f"{SQLITE_PREFIX}{self.chain.data_dir}/portal.sqlite3"

    @property
    def rpc_url(self) -> str:
        return self.chain.rpc_url

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PortalSettings:
        """Read every PORTAL_* setting (and the chain's), with errors that name the setting."""
        return cls(chain=ChainSettings.from_env(env), **PORTAL_SETTINGS.read(env))

    def to_env(self) -> dict[str, str]:
        """The environment that makes ``from_env`` (in an indexer process) give these back."""
        chain = self.chain
        return {**CHAIN_SETTINGS.to_env(chain), "RPC_URL": chain.rpc_url,
                "DEPLOYMENT_FILE": str(chain.deployment_file), **PORTAL_SETTINGS.to_env(self)}


def check_database_url(raw: str | None, env: Mapping[str, str]) -> str | None:
    """A SQLite file (``sqlite:///relative/or//absolute/path``) or a PostgreSQL URL; unset
    is the default file."""
    del env
    if raw is None or raw.startswith(POSTGRES_PREFIXES):
        return raw
    if raw.startswith(SQLITE_PREFIX) and raw[len(SQLITE_PREFIX):].strip():
        path = Path(raw[len(SQLITE_PREFIX):])
        return f"{SQLITE_PREFIX}{path if path.is_absolute() else PROJECT_ROOT / path}"
    raise ConfigError(
        "PORTAL_DATABASE_URL must be sqlite:///<file> (relative to the project, or "
        "sqlite:////absolute/file) or postgresql://user:password@host:port/database, not "
        f"{masked_url(raw)!r}.")


_D = PortalSettings()
PORTAL_SETTINGS = SettingsGroup(
    "Portal indexer", "portal",
    "`pilotchain-portal-indexer` follows the Settlement contract's events into the portal's "
    "database; it also reads the chain settings (`RPC_URL`, `DEPLOYMENT_FILE`).",
    (
        Setting("PORTAL_DATABASE_URL", "database_url_override", "optional", None,
                "the index: `sqlite:///<file>` or `postgresql://user:password@host:port/db`",
                secret=True, default_text="sqlite:///<NATIVE_DATA_DIR>/portal.sqlite3",
                check=check_database_url),
        Setting("PORTAL_CONFIRMATIONS", "confirmations", "int", _D.confirmations,
                "blocks on top of a block before its events are indexed", minimum=0),
        Setting("PORTAL_MAX_REORG_DEPTH", "max_reorg_depth", "int", _D.max_reorg_depth,
                "most indexed blocks a reorganisation may replace; a deeper one stops the "
                "indexer with an error", minimum=1),
        Setting("PORTAL_PAGE_BLOCKS", "page_blocks", "int", _D.page_blocks,
                "blocks per `eth_getLogs` request, each page committed in one transaction",
                minimum=1),
        Setting("PORTAL_POLL_INTERVAL", "poll_interval", "float", _D.poll_interval,
                "seconds between looks at the head once caught up", minimum=0.05),
        Setting("PORTAL_RPC_TIMEOUT", "rpc_timeout_seconds", "float", _D.rpc_timeout_seconds,
                "seconds before a call to the node counts as failed", minimum=1),
    ),
)

