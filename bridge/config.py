"""The bridge's typed settings, declared once and read once by the entry point.

Chain, keys and the deployment record come from :class:`ChainSettings` (``RPC_URL``,
``KEYS_DIR``, ``DEPLOYMENT_FILE``, ...), so the bridge finds what ``./scripts/up`` deployed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge.errors import BridgeConfigError
from pilotchain.config import (
    BRIDGE_DEAD_LETTER_STREAM,
    BRIDGE_STREAM,
    CHAIN_SETTINGS,
    DEFAULT_REDIS_URL,
    DEFAULT_TRADE_STREAM,
    REDIS_URL,
    ChainSettings,
    RedisConnection,
    dead_letter_name,
)
from pilotchain.contract import broadcast_batch_size, max_batch_size
from pilotchain.settings import Setting, SettingsGroup, local_url
from worker.settings import check_writer_settings, loop_rows

DEFAULT_STREAM = DEFAULT_TRADE_STREAM
DEFAULT_METRICS_PORT = 9108


@dataclass(frozen=True)
class StreamSettings:
    """Where trades are queued: shared by the bridge and the replay tool."""

    redis_url: str = DEFAULT_REDIS_URL
    stream: str = DEFAULT_STREAM

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StreamSettings:
        return cls(redis_url=RedisConnection.from_env(env).url, **STREAM_SETTINGS.read(env))


STREAM_SETTINGS = SettingsGroup(
    "Trade stream", "stream",
    "Where gsy-e's plug-in, `pilotchain replay` and the bridge meet, in the Redis of the "
    "[Redis settings](#redis).",
    (BRIDGE_STREAM,),
)


@dataclass(frozen=True)
class BridgeSettings:
    """Everything the bridge service needs; every field is a row of BRIDGE_SETTINGS."""

    chain: ChainSettings = field(default_factory=ChainSettings)
    streams: StreamSettings = field(default_factory=StreamSettings)
    group: str = "settlement-bridge"
    consumer: str = "bridge"
    dead_letter_stream: str = ""
    key_role: str = "bridge"
    max_batch: int = max_batch_size()
    linger: float = 0.1
    small_batch: int = broadcast_batch_size()
    heavy_queue: int = 200
    gas_budget: float = 1.0
    # Small batches at 500 trades/s are ~45 transactions a second, each ~2.5 s from sent to
    # final: ~115 in flight. With full batches the gas budget bounds the pipeline first.
    max_in_flight: int = 128
    confirmations: int = 1
    priority_fee_gwei: float = 1.0
    replace_after_blocks: int = 5
    max_queued: int = 20_000
    recovery_timeout: float = 60.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = DEFAULT_METRICS_PORT
    log_interval: float = 10.0
    backoff_max: float = 10.0
    dead_letter_maxlen: int = 100_000
    # A 100,000-trade slot settles in 9.5 minutes on the default chain (docs/performance.md):
    # that is a normal burst, not a fault.
    health_max_age: float = 900.0
    health_max_backlog: int = 200_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "dead_letter_stream",
                           dead_letter_name(self.dead_letter_stream, self.streams.stream))
        check_writer_settings("BRIDGE", self.gas_budget, self.max_batch, max_batch_size(),
                              BridgeConfigError)
        if not 0 <= self.small_batch <= self.max_batch:
            raise BridgeConfigError(
                f"BRIDGE_SMALL_BATCH must be between 0 (off) and BRIDGE_MAX_BATCH "
                f"({self.max_batch}), not {self.small_batch}.")

    @property
    def metrics_url(self) -> str:
        return local_url(self.metrics_host, self.metrics_port)

    @property
    def redis_url(self) -> str:
        return self.streams.redis_url

    @property
    def stream(self) -> str:
        return self.streams.stream

    def to_env(self) -> dict[str, str]:
        """The environment that makes ``from_env`` (in a bridge process) give these settings
        back, for starting the bridge from typed settings (tests, benchmarks)."""
        chain = self.chain
        return {
            **CHAIN_SETTINGS.to_env(chain),
            # The chain's URL as the bridge resolved it, so RPC_HOST/RPC_HTTP_PORT need not agree.
            "RPC_URL": chain.rpc_url, "DEPLOYMENT_FILE": str(chain.deployment_file),
            "REDIS_URL": self.streams.redis_url, **STREAM_SETTINGS.to_env(self.streams),
            **BRIDGE_SETTINGS.to_env(self),
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BridgeSettings:
        """Typed settings from an environment snapshot; errors name the setting."""
        return cls(chain=ChainSettings.from_env(env), streams=StreamSettings.from_env(env),
                   **BRIDGE_SETTINGS.read(env))


_D = BridgeSettings()
_ROWS = loop_rows("BRIDGE", _D)
BRIDGE_SETTINGS = SettingsGroup(
    "Bridge", "bridge",
    "The bridge (`pilotchain-bridge`) also reads the chain settings (`RPC_URL`, `KEYS_DIR`, "
    "`DEPLOYMENT_FILE`) and the trade stream's; see [docs/bridge.md](bridge.md) for how it "
    "works.",
    (
        _ROWS["group"],
        Setting("BRIDGE_CONSUMER", "consumer", "str", _D.consumer,
                "this bridge's consumer name"),
        BRIDGE_DEAD_LETTER_STREAM,
        Setting("BRIDGE_KEY_ROLE", "key_role", "str", _D.key_role,
                "which account of `KEYS_DIR` signs (`keys/<role>/`)"),
        Setting("BRIDGE_MAX_BATCH", "max_batch", "int", _D.max_batch,
                f"trades per transaction ({max_batch_size()} is the most under geth's 128 KiB "
                "limit)", minimum=1),
        Setting("BRIDGE_LINGER", "linger", "float", _D.linger,
                "seconds a trade may wait for a fuller batch", minimum=0.0),
        Setting("BRIDGE_SMALL_BATCH", "small_batch", "int", _D.small_batch,
                f"trades per transaction while the queue is short ({broadcast_batch_size()} "
                "is the most geth sends whole to the signers: bigger transactions are only "
                "announced and reach them 0.5 s later); 0: always full batches", minimum=0),
        Setting("BRIDGE_HEAVY_QUEUE", "heavy_queue", "int", _D.heavy_queue,
                "from this many queued trades on, batches are full (`BRIDGE_MAX_BATCH`): "
                "fewer transactions, ~10% less gas per trade", minimum=1),
        Setting("BRIDGE_GAS_BUDGET", "gas_budget", "float", _D.gas_budget,
                "gas sent per new block, as a fraction of the gas target (half the block gas "
                "limit), above 0 and at most 2; at 1 or below, blocks average at most the "
                "target and the base fee does not climb"),
        _ROWS["max_in_flight"],
        _ROWS["confirmations"],
        _ROWS["priority_fee_gwei"],
        Setting("BRIDGE_REPLACE_AFTER_BLOCKS", "replace_after_blocks", "int",
                _D.replace_after_blocks,
                "a transaction still unmined after this many blocks is sent again (replaced "
                "with fees 13% higher if the base fee has priced it out)", minimum=1),
        Setting("BRIDGE_MAX_QUEUED", "max_queued", "int", _D.max_queued,
                "trades read but not final before the bridge pauses reading", minimum=1),
        _ROWS["recovery_timeout"],
        _ROWS["metrics_host"],
        _ROWS["metrics_port"],
        _ROWS["log_interval"],
        _ROWS["backoff_max"],
        _ROWS["dead_letter_maxlen"],
        _ROWS["health_max_age"],
        _ROWS["health_max_backlog"],
    ),
)


# gsy-e's plug-in (plugin/, a distribution of its own that cannot import PilotChain) reads
# these from gsy-e's environment; declared here for the settings reference, and
# tests/test_bridge_plugin.py checks the plug-in reads them the same way.
PLUGIN_SETTINGS = SettingsGroup(
    "gsy-e plug-in", "plug-in",
    "Read by PilotChain's plug-in from gsy-e's environment when gsy-e builds its first market "
    "(install it with `scripts/install-plugin`; see [docs/bridge.md](bridge.md)). The plug-in "
    "knows no password file: give it `REDIS_URL` with the password in it. A malformed number "
    "falls back to the default with a warning: the plug-in never stops gsy-e.",
    (
        REDIS_URL,
        BRIDGE_STREAM,
        Setting("BRIDGE_PLUGIN_BUFFER", "buffer_limit", "int", 200_000,
                "trades kept in memory while Redis is unreachable (about 1.5 KB each, so "
                "about 300 MB at most)", minimum=1),
        Setting("BRIDGE_PLUGIN_OVERFLOW_FILE", "overflow_file", "str",
                "pilotchain-unpublished-trades.jsonl",
                "where trades beyond the buffer, and trades still waiting when gsy-e exits, "
                "are written (recording format), relative to gsy-e's working directory; "
                "publish them with `pilotchain replay FILE`"),
    ),
)
