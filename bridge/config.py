"""The bridge's typed settings, read once by the entry point from the environment.

Chain, keys and the deployment record come from :class:`ChainSettings` (``RPC_URL``,
``KEYS_DIR``, ``DEPLOYMENT_FILE``, ...), so the bridge finds what ``./scripts/up`` deployed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge.errors import BridgeConfigError
from pilotchain.config import ChainSettings, EnvReader
from pilotchain.contract import max_batch_size

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_STREAM = "pilotchain:trades"
DEFAULT_METRICS_PORT = 9108


@dataclass(frozen=True)
class StreamSettings:
    """Where trades are queued: shared by the bridge, the replay tool and the plug-in."""

    redis_url: str = DEFAULT_REDIS_URL
    stream: str = DEFAULT_STREAM

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StreamSettings:
        read = EnvReader(env)
        return cls(redis_url=read.str("REDIS_URL", DEFAULT_REDIS_URL),
                   stream=read.str("BRIDGE_STREAM", DEFAULT_STREAM))


@dataclass(frozen=True)
class BridgeSettings:
    """Everything the bridge service needs; see docs/bridge.md for the table."""

    chain: ChainSettings = field(default_factory=ChainSettings)
    streams: StreamSettings = field(default_factory=StreamSettings)
    group: str = "settlement-bridge"
    consumer: str = "bridge"
    dead_letter_stream: str = ""
    key_role: str = "bridge"
    max_batch: int = max_batch_size()
    linger: float = 0.1
    gas_budget: float = 1.0
    max_in_flight: int = 12
    confirmations: int = 1
    priority_fee_gwei: float = 1.0
    replace_after_blocks: int = 5
    max_queued: int = 20_000
    recovery_timeout: float = 60.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = DEFAULT_METRICS_PORT
    log_interval: float = 10.0
    backoff_max: float = 10.0

    def __post_init__(self) -> None:
        if not self.dead_letter_stream:
            object.__setattr__(self, "dead_letter_stream", f"{self.streams.stream}:dead")
        if not 0 < self.gas_budget <= 2:
            raise BridgeConfigError(
                f"BRIDGE_GAS_BUDGET must be above 0 and at most 2 (a fraction of the block "
                f"gas target), not {self.gas_budget}."
            )
        if not 1 <= self.max_batch <= max_batch_size():
            raise BridgeConfigError(
                f"BRIDGE_MAX_BATCH must be between 1 and {max_batch_size()} (geth refuses "
                f"transactions over 128 KiB), not {self.max_batch}."
            )

    @property
    def metrics_url(self) -> str:
        host = "127.0.0.1" if self.metrics_host in ("0.0.0.0", "") else self.metrics_host
        return f"http://{host}:{self.metrics_port}"

    @property
    def redis_url(self) -> str:
        return self.streams.redis_url

    @property
    def stream(self) -> str:
        return self.streams.stream

    def to_env(self) -> dict[str, str]:
        """The environment that makes ``from_env`` (in a bridge process) give these settings
        back, for starting the bridge from typed settings (the service, tests, benchmarks)."""
        chain = self.chain
        env = {
            "RPC_URL": chain.rpc_url, "CHAIN_ID": str(chain.chain_id),
            "KEYS_DIR": str(chain.keys_dir), "GENESIS_FILE": str(chain.genesis_file),
            "NATIVE_DATA_DIR": str(chain.data_dir), "DEPLOYMENT_FILE": str(chain.deployment_file),
            "REDIS_URL": self.redis_url, "BRIDGE_STREAM": self.stream,
            "BRIDGE_DEAD_LETTER_STREAM": self.dead_letter_stream,
        }
        for name, key in _ENV_NAMES.items():
            env[key] = str(getattr(self, name))
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BridgeSettings:
        """Typed settings from an environment snapshot; errors name the setting."""
        read = EnvReader(env)
        d = cls()
        return cls(
            chain=ChainSettings.from_env(env),
            streams=StreamSettings.from_env(env),
            group=read.str("BRIDGE_GROUP", d.group),
            consumer=read.str("BRIDGE_CONSUMER", d.consumer),
            dead_letter_stream=read.str("BRIDGE_DEAD_LETTER_STREAM", ""),
            key_role=read.str("BRIDGE_KEY_ROLE", d.key_role),
            max_batch=read.int("BRIDGE_MAX_BATCH", d.max_batch, minimum=1),
            linger=read.float("BRIDGE_LINGER", d.linger, minimum=0.0),
            gas_budget=read.float("BRIDGE_GAS_BUDGET", d.gas_budget),
            max_in_flight=read.int("BRIDGE_MAX_IN_FLIGHT", d.max_in_flight, minimum=1),
            confirmations=read.int("BRIDGE_CONFIRMATIONS", d.confirmations, minimum=0),
            priority_fee_gwei=read.float("BRIDGE_PRIORITY_FEE_GWEI", d.priority_fee_gwei,
                                         minimum=0.0),
            replace_after_blocks=read.int("BRIDGE_REPLACE_AFTER_BLOCKS",
                                          d.replace_after_blocks, minimum=1),
            max_queued=read.int("BRIDGE_MAX_QUEUED", d.max_queued, minimum=1),
            recovery_timeout=read.float("BRIDGE_RECOVERY_TIMEOUT", d.recovery_timeout,
                                        minimum=0.0),
            metrics_host=read.str("BRIDGE_METRICS_HOST", d.metrics_host),
            metrics_port=read.int("BRIDGE_METRICS_PORT", d.metrics_port, minimum=0),
            log_interval=read.float("BRIDGE_LOG_INTERVAL", d.log_interval, minimum=0.1),
            backoff_max=read.float("BRIDGE_BACKOFF_MAX", d.backoff_max, minimum=0.1),
        )


# Settings field -> environment variable, for the fields read one to one.
_ENV_NAMES = {
    "group": "BRIDGE_GROUP", "consumer": "BRIDGE_CONSUMER", "key_role": "BRIDGE_KEY_ROLE",
    "max_batch": "BRIDGE_MAX_BATCH", "linger": "BRIDGE_LINGER",
    "gas_budget": "BRIDGE_GAS_BUDGET", "max_in_flight": "BRIDGE_MAX_IN_FLIGHT",
    "confirmations": "BRIDGE_CONFIRMATIONS", "priority_fee_gwei": "BRIDGE_PRIORITY_FEE_GWEI",
    "replace_after_blocks": "BRIDGE_REPLACE_AFTER_BLOCKS", "max_queued": "BRIDGE_MAX_QUEUED",
    "recovery_timeout": "BRIDGE_RECOVERY_TIMEOUT", "metrics_host": "BRIDGE_METRICS_HOST",
    "metrics_port": "BRIDGE_METRICS_PORT", "log_interval": "BRIDGE_LOG_INTERVAL",
    "backoff_max": "BRIDGE_BACKOFF_MAX",
}
