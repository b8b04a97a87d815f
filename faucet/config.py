"""The faucet's settings, typed once from the environment by the entry point.

``create_app`` reads the environment (``load_environment``) and builds one
:class:`FaucetSettings`; nothing below it looks at ``os.environ``. The chain's own
settings (chain id, network name, currency, explorer, RPC URL) are the stack's shared
:class:`~pilotchain.config.ChainSettings`, so the faucet advertises the network that runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from limits import RateLimitItem, parse_many

from pilotchain.config import ChainSettings, EnvReader
from pilotchain.errors import ConfigError

WEI_PER_UNIT = 10**18


@dataclass(frozen=True)
class FaucetSettings:
    """Everything the faucet needs; secrets are left out of ``repr`` so they never reach a log."""

    chain: ChainSettings = field(default_factory=ChainSettings)
    rpc_url: str = "http://127.0.0.1:8545"
    public_rpc_url: str = "http://127.0.0.1:8545"
    redis_url: str = "redis://127.0.0.1:6379/0"
    amount_wei: int = WEI_PER_UNIT
    address_limit: str = "1 per 24 hours"
    ip_limit: str = "10 per 24 hours"
    trusted_proxies: int = 0
    cors_origins: tuple[str, ...] = ()
    path_prefix: str = "/faucet"
    keystore_file: Path = Path("keys/faucet/keystore.json")
    password_file: Path = Path("keys/faucet/password")
    private_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = 9000
    workers: int = 4
    threads: int = 4
    max_body_bytes: int = 4096
    lock_file: Path | None = None
    rpc_timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FaucetSettings:
        """Read every FAUCET_* setting (and the chain's) with errors that name the setting."""
        read = EnvReader(env)
        chain = ChainSettings.from_env(env)
        d = cls()
        return cls(
            chain=chain,
            rpc_url=chain.rpc_url,
            public_rpc_url=read.str("FAUCET_PUBLIC_RPC_URL", chain.rpc_url),
            redis_url=read.str("REDIS_URL", d.redis_url),
            amount_wei=parse_amount(read.str("FAUCET_AMOUNT", "1"), chain.currency_symbol),
            address_limit=check_limit("FAUCET_ADDRESS_LIMIT",
                                      read.str("FAUCET_ADDRESS_LIMIT", d.address_limit)),
            ip_limit=check_limit("FAUCET_IP_LIMIT", read.str("FAUCET_IP_LIMIT", d.ip_limit)),
            trusted_proxies=read.int("FAUCET_TRUSTED_PROXIES", d.trusted_proxies, minimum=0),
            cors_origins=tuple(o.rstrip("/") for o in read.list("FAUCET_CORS_ORIGINS")),
            path_prefix=normalise_prefix(read.str("FAUCET_PATH_PREFIX", d.path_prefix)),
            keystore_file=read.path("FAUCET_KEYSTORE",
                                    chain.keys_dir / "faucet" / "keystore.json"),
            password_file=read.path("FAUCET_PASSWORD_FILE", chain.keys_dir / "faucet" / "password"),
            private_key=read.optional("FAUCET_PRIVATE_KEY"),
            secret_key=read.optional("FAUCET_SECRET_KEY"),
            host=read.str("FAUCET_HOST", d.host),
            port=read.int("FAUCET_PORT", d.port, minimum=1),
            workers=read.int("FAUCET_WORKERS", d.workers, minimum=1),
            threads=read.int("FAUCET_THREADS", d.threads, minimum=1),
            max_body_bytes=read.int("FAUCET_MAX_BODY_BYTES", d.max_body_bytes, minimum=256),
            lock_file=optional_path(read, "FAUCET_LOCK_FILE"),
            rpc_timeout_seconds=read.float("FAUCET_RPC_TIMEOUT", d.rpc_timeout_seconds,
                                           minimum=1),
        )

    @property
    def address_limits(self) -> list[RateLimitItem]:
        return parse_many(self.address_limit)

    @property
    def ip_limits(self) -> list[RateLimitItem]:
        return parse_many(self.ip_limit)

    @property
    def prefixes(self) -> tuple[str, ...]:
        """Where the page and the API are served: the root, and the legacy prefix if set."""
        return ("", self.path_prefix) if self.path_prefix else ("",)


def optional_path(read: EnvReader, name: str) -> Path | None:
    """A path setting without a default (relative paths resolve against the project)."""
    return read.path(name, Path()) if read.optional(name) else None


def parse_amount(raw: str, symbol: str) -> int:
    """``FAUCET_AMOUNT`` in whole units (``"1"``, ``"0.5"``) as wei."""
    try:
        units = Decimal(raw)
    except InvalidOperation:
        units = Decimal(-1)
    wei = units * WEI_PER_UNIT
    if not units.is_finite() or wei <= 0 or wei != wei.to_integral_value():
        raise ConfigError(
            f"FAUCET_AMOUNT must be a positive number of {symbol} with at most 18 decimals, "
            f"like 1 or 0.5, not {raw!r}."
        )
    return int(wei)


def check_limit(name: str, raw: str) -> str:
    """Refuse a rate limit that Flask-Limiter's notation cannot parse, naming the setting."""
    try:
        items = parse_many(raw)
    except ValueError:
        items = []
    if not items or any(item.amount < 1 for item in items):
        raise ConfigError(
            f"{name} must be a rate such as '1 per 24 hours', '10/day' or '5/hour;20/day', "
            f"not {raw!r}."
        )
    return raw


def normalise_prefix(raw: str) -> str:
    """``faucet``, ``/faucet/`` -> ``/faucet``; ``/`` or ``none`` -> no prefix."""
    prefix = raw.strip().strip("/")
    if prefix.lower() in {"", "none"}:
        return ""
    if any(ch in prefix for ch in "?#% ") :
        raise ConfigError(f"FAUCET_PATH_PREFIX must be a plain URL path like /faucet, not {raw!r}.")
    return "/" + prefix
