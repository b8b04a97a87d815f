"""The faucet's settings, declared once and typed once from the environment by the entry point.

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

from pilotchain.config import DEFAULT_REDIS_URL, ChainSettings, RedisConnection
from pilotchain.errors import ConfigError
from pilotchain.settings import Setting, SettingsGroup, local_url
from pilotchain.webmetrics import metrics_settings

WEI_PER_UNIT = 10**18


@dataclass(frozen=True)
class FaucetSettings:
    """Everything the faucet needs; secrets are left out of ``repr`` so they never reach a log.

    Fields left ``None`` take their default from the chain's settings (see FAUCET_SETTINGS).
    """

    chain: ChainSettings = field(default_factory=ChainSettings)
    redis_url: str = DEFAULT_REDIS_URL
    amount_wei: int = WEI_PER_UNIT
    address_limit: str = "1 per 24 hours"
    ip_limit: str = "10 per 24 hours"
    trusted_proxies: int = 0
    cors_origins: tuple[str, ...] = ()
    path_prefix: str = "/faucet"
    keystore_override: Path | None = None
    password_override: Path | None = None
    private_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    public_rpc_url_override: str | None = None
    host: str = "127.0.0.1"
    port: int = 9000
    workers: int = 4
    threads: int = 4
    max_body_bytes: int = 4096
    lock_file: Path | None = None
    rpc_timeout_seconds: float = 10.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9114
    metrics_dir_override: Path | None = None
    low_balance_wei: int = 1000 * WEI_PER_UNIT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FaucetSettings:
        """Read every FAUCET_* setting (and the chain's) with errors that name the setting."""
        return cls(chain=ChainSettings.from_env(env),
                   redis_url=RedisConnection.from_env(env).url, **FAUCET_SETTINGS.read(env))

    @property
    def url(self) -> str:
        """Where a browser on this machine reaches the faucet."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        """Where Prometheus scrapes ``/metrics`` on this machine."""
        return local_url(self.metrics_host, self.metrics_port)

    @property
    def metrics_dir(self) -> Path:
        """The gunicorn workers' metric files (emptied when gunicorn starts)."""
        return self.metrics_dir_override or self.chain.data_dir / "metrics" / "faucet"

    @property
    def rpc_url(self) -> str:
        """The node the faucet sends through."""
        return self.chain.rpc_url

    @property
    def public_rpc_url(self) -> str:
        """The RPC URL shown on the page and given to MetaMask."""
        return self.public_rpc_url_override or self.chain.rpc_url

    @property
    def keystore_file(self) -> Path:
        return self.keystore_override or self.chain.keys_dir / "faucet" / "keystore.json"

    @property
    def password_file(self) -> Path:
        return self.password_override or self.chain.keys_dir / "faucet" / "password"

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


def parse_amount(raw: str, symbol: str, name: str = "FAUCET_AMOUNT") -> int:
    """``FAUCET_AMOUNT`` (or setting ``name``) in whole units (``"1"``, ``"0.5"``) as wei."""
    try:
        units = Decimal(raw)
    except InvalidOperation:
        units = Decimal(-1)
    wei = units * WEI_PER_UNIT
    if not units.is_finite() or wei <= 0 or wei != wei.to_integral_value():
        raise ConfigError(
            f"{name} must be a positive number of {symbol} with at most 18 decimals, "
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


def _cors(origins: tuple[str, ...], env: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(origin.rstrip("/") for origin in origins)


def _amount(raw: str, env: Mapping[str, str]) -> int:
    symbol = env.get("CURRENCY_SYMBOL", "").strip() or ChainSettings.currency_symbol
    return parse_amount(raw, symbol)


def _low_balance(raw: str, env: Mapping[str, str]) -> int:
    symbol = env.get("CURRENCY_SYMBOL", "").strip() or ChainSettings.currency_symbol
    return parse_amount(raw, symbol, "FAUCET_LOW_BALANCE")


_D = FaucetSettings()
FAUCET_SETTINGS = SettingsGroup(
    "Faucet", "faucet",
    "The faucet (gunicorn serving `faucet.app:create_app()`) also reads the chain settings "
    "(`RPC_URL`, `KEYS_DIR`, `CURRENCY_SYMBOL`, ...) and the Redis settings (its claim limits "
    "live there); see [docs/faucet.md](faucet.md).",
    (
        Setting("FAUCET_AMOUNT", "amount_wei", "str", "1",
                "units of the native currency per claim (decimals allowed, e.g. `0.5`)",
                check=_amount),
        Setting("FAUCET_ADDRESS_LIMIT", "address_limit", "str", _D.address_limit,
                "claims per wallet address (Flask-Limiter notation; `;` separates several)",
                check=lambda raw, _: check_limit("FAUCET_ADDRESS_LIMIT", raw)),
        Setting("FAUCET_IP_LIMIT", "ip_limit", "str", _D.ip_limit, "claims per client IP",
                check=lambda raw, _: check_limit("FAUCET_IP_LIMIT", raw)),
        Setting("FAUCET_TRUSTED_PROXIES", "trusted_proxies", "int", _D.trusted_proxies,
                "reverse proxies in front of the faucet whose `X-Forwarded-For` and "
                "`X-Forwarded-Proto` are believed",
                minimum=0),
        Setting("FAUCET_CORS_ORIGINS", "cors_origins", "list", (),
                "comma-separated origins allowed to call the JSON API from a browser "
                "(`*`: any)", check=_cors),
        Setting("FAUCET_PATH_PREFIX", "path_prefix", "str", _D.path_prefix,
                "second path the page and API are served under (the earlier pilot's); "
                "`none` switches it off", check=lambda raw, _: normalise_prefix(raw)),
        Setting("FAUCET_KEYSTORE", "keystore_override", "optional_path", None,
                "the faucet account's keystore (geth v3)",
                default_text="<KEYS_DIR>/faucet/keystore.json"),
        Setting("FAUCET_PASSWORD_FILE", "password_override", "optional_path", None,
                "its password", default_text="<KEYS_DIR>/faucet/password"),
        Setting("FAUCET_PRIVATE_KEY", "private_key", "optional", None,
                "the key as hex instead of the keystore (takes precedence)", secret=True),
        Setting("FAUCET_SECRET_KEY", "secret_key", "optional", None,
                "signs the page's session cookie (its CSRF token); every worker must have "
                "the same", secret=True, default_text="(derived from the faucet key)"),
        Setting("FAUCET_PUBLIC_RPC_URL", "public_rpc_url_override", "optional", None,
                "RPC URL shown on the page and given to MetaMask (set it when the faucet "
                "reaches the node by an internal name)", default_text="<RPC_URL>"),
        Setting("FAUCET_HOST", "host", "str", _D.host,
                "address gunicorn binds (`0.0.0.0` in a container)"),
        Setting("FAUCET_PORT", "port", "int", _D.port, "the port gunicorn listens on",
                minimum=1),
        Setting("FAUCET_WORKERS", "workers", "int", _D.workers, "gunicorn worker processes",
                minimum=1),
        Setting("FAUCET_THREADS", "threads", "int", _D.threads,
                "threads per worker (sends take turns anyway; more threads only add GIL "
                "contention)", minimum=1),
        Setting("FAUCET_MAX_BODY_BYTES", "max_body_bytes", "int", _D.max_body_bytes,
                "largest request body accepted", minimum=256),
        Setting("FAUCET_LOCK_FILE", "lock_file", "optional_path", None,
                "the send lock and nonce (must be on a disk all workers see)",
                default_text="<temp dir>/pilotchain-faucet-<address>.lock"),
        Setting("FAUCET_RPC_TIMEOUT", "rpc_timeout_seconds", "float", _D.rpc_timeout_seconds,
                "seconds before a call to the node counts as failed", minimum=1),
        *metrics_settings("FAUCET", "faucet", host=_D.metrics_host, port=_D.metrics_port,
                          public_port=_D.port),
        Setting("FAUCET_LOW_BALANCE", "low_balance_wei", "str", "1000",
                "below this balance (units of the native currency) the faucet's account is "
                "low: the `PilotChainFaucetBalanceLow` alert fires", check=_low_balance),
    ),
)
