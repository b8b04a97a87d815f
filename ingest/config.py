"""The ingest's typed settings, declared once and read once by the entry point.

Chain, keys and the deployment record come from :class:`ChainSettings` (``RPC_URL``,
``KEYS_DIR``, ``DEPLOYMENT_FILE``, ...), Redis from :class:`RedisConnection`, like the bridge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ingest.errors import IngestConfigError
from pilotchain.config import (
    CHAIN_SETTINGS,
    CHAIN_SETTINGS_BY_NAME,
    DEFAULT_READING_STREAM,
    DEFAULT_REDIS_URL,
    INGEST_DEAD_LETTER_STREAM,
    INGEST_STREAM,
    ChainSettings,
    MqttConnection,
    RedisConnection,
    dead_letter_name,
)
from pilotchain.settings import Setting, SettingsGroup, local_url
from worker.settings import check_writer_settings, loop_rows

DEFAULT_STREAM = DEFAULT_READING_STREAM
DEFAULT_METRICS_PORT = 9110
# Readings per submitReadings under geth's 128 KiB transaction limit: 352 bytes each.
MAX_BATCH = 300
# Unsettled readings the stream may hold (about 0.5 KB each in Redis): two minutes of 10,000
# meters' minute and boundary readings, five times over.
DEFAULT_MAX_BACKLOG = 100_000


@dataclass(frozen=True)
class IngestSettings:
    """Everything the ingest writer needs; every field but ``chain`` and ``redis_url`` is a
    row of INGEST_SETTINGS."""

    chain: ChainSettings = field(default_factory=ChainSettings)
    redis_url: str = DEFAULT_REDIS_URL
    stream: str = DEFAULT_STREAM
    group: str = "settlement-ingest"
    consumer: str = "ingest"
    dead_letter_stream: str = ""
    key_role: str = "ingest"
    max_batch: int = 200
    linger: float = 0.2
    gas_budget: float = 0.5
    max_in_flight: int = 8
    confirmations: int = 1
    priority_fee_gwei: float = 1.0
    replace_after_blocks: int = 5
    max_queued: int = 20_000
    recovery_timeout: float = 60.0
    unknown_meter_ttl: float = 10.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = DEFAULT_METRICS_PORT
    log_interval: float = 10.0
    backoff_max: float = 10.0
    max_backlog: int = DEFAULT_MAX_BACKLOG
    dead_letter_maxlen: int = 100_000
    minutes_maxlen: int = 200_000
    # 10,000 meters' boundary readings take about four minutes at the default gas budget
    # (docs/metering.md, at pilot scale): degraded means behind that, not busy.
    health_max_age: float = 600.0
    health_max_backlog: int = DEFAULT_MAX_BACKLOG // 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "dead_letter_stream",
                           dead_letter_name(self.dead_letter_stream, self.stream))
        check_writer_settings("INGEST", self.gas_budget, self.max_batch, MAX_BATCH,
                              IngestConfigError)

    @property
    def metrics_url(self) -> str:
        return local_url(self.metrics_host, self.metrics_port)

    @property
    def minutes_stream(self) -> str:
        """Where checked minute readings are kept (off chain, for the participant view)."""
        return f"{self.stream}:minutes"

    def to_env(self) -> dict[str, str]:
        """The environment that makes ``from_env`` (in an ingest process) give these back."""
        chain = self.chain
        return {
            **CHAIN_SETTINGS.to_env(chain),
            "RPC_URL": chain.rpc_url, "DEPLOYMENT_FILE": str(chain.deployment_file),
            "REDIS_URL": self.redis_url, **INGEST_SETTINGS.to_env(self),
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IngestSettings:
        """Typed settings from an environment snapshot; errors name the setting."""
        return cls(chain=ChainSettings.from_env(env), redis_url=RedisConnection.from_env(env).url,
                   **INGEST_SETTINGS.read(env))


_D = IngestSettings()
_ROWS = loop_rows("INGEST", _D)
INGEST_SETTINGS = SettingsGroup(
    "Meter ingest", "ingest",
    "The ingest writer (`pilotchain-ingest`) takes signed meter readings from a Redis stream "
    "to `submitReadings`; it also reads the chain settings (`RPC_URL`, `KEYS_DIR`, "
    "`DEPLOYMENT_FILE`) and the [Redis settings](#redis). See "
    "[docs/metering.md](metering.md#ingest).",
    (
        INGEST_STREAM,
        _ROWS["group"],
        Setting("INGEST_CONSUMER", "consumer", "str", _D.consumer,
                "this writer's consumer name"),
        INGEST_DEAD_LETTER_STREAM,
        Setting("INGEST_KEY_ROLE", "key_role", "str", _D.key_role,
                "which account of `KEYS_DIR` signs (`keys/<role>/`; needs READER_ROLE)"),
        Setting("INGEST_MAX_BATCH", "max_batch", "int", _D.max_batch,
                f"readings per transaction (at most {MAX_BATCH}, under geth's 128 KiB limit)",
                minimum=1),
        Setting("INGEST_LINGER", "linger", "float", _D.linger,
                "seconds a reading may wait for a fuller batch", minimum=0.0),
        Setting("INGEST_GAS_BUDGET", "gas_budget", "float", _D.gas_budget,
                "gas sent per new block, as a fraction of the gas target (the bridge's trades "
                "share the blocks)"),
        _ROWS["max_in_flight"],
        _ROWS["confirmations"],
        _ROWS["priority_fee_gwei"],
        Setting("INGEST_REPLACE_AFTER_BLOCKS", "replace_after_blocks", "int",
                _D.replace_after_blocks,
                "a transaction still unmined after this many blocks is sent again", minimum=1),
        Setting("INGEST_MAX_QUEUED", "max_queued", "int", _D.max_queued,
                "readings read but not final before the writer pauses reading", minimum=1),
        _ROWS["recovery_timeout"],
        Setting("INGEST_UNKNOWN_METER_TTL", "unknown_meter_ttl", "float",
                _D.unknown_meter_ttl,
                "seconds a meter found unregistered is not looked up again (registered "
                "meters are cached for good: a meter's key never changes)", minimum=0.0),
        _ROWS["metrics_host"],
        _ROWS["metrics_port"],
        _ROWS["log_interval"],
        _ROWS["backoff_max"],
        Setting("INGEST_MAX_BACKLOG", "max_backlog", "int", _D.max_backlog,
                "unsettled readings the stream may hold: beyond, the HTTP endpoint answers 503 "
                "and the MQTT subscriber takes no more messages (the broker keeps them) until "
                "the writer has settled some", minimum=1),
        _ROWS["dead_letter_maxlen"],
        Setting("INGEST_MINUTES_MAXLEN", "minutes_maxlen", "int", _D.minutes_maxlen,
                "checked minute readings kept in `<INGEST_STREAM>:minutes` (off chain; the "
                "oldest are dropped beyond)", minimum=1),
        _ROWS["health_max_age"],
        _ROWS["health_max_backlog"],
    ),
)
_INGEST_ROWS = {setting.field: setting for setting in INGEST_SETTINGS.settings}


@dataclass(frozen=True)
class HttpSettings:
    """The bulk-upload endpoint (gunicorn serving ``ingest.http:create_app()``)."""

    redis_url: str = DEFAULT_REDIS_URL
    stream: str = DEFAULT_STREAM
    host: str = "127.0.0.1"
    port: int = 8548
    workers: int = 2
    max_body_bytes: int = 8 * 1024 * 1024
    max_readings: int = 20_000
    uploaders_file_override: Path | None = None
    keys_dir: Path = field(default_factory=lambda: ChainSettings().keys_dir)
    address_limit: int = 120
    uploader_limit: int = 60_000
    max_backlog: int = DEFAULT_MAX_BACKLOG
    health_max_age: float = IngestSettings.health_max_age
    health_max_backlog: int = IngestSettings.health_max_backlog

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def uploaders_file(self) -> Path:
        """Where the operator's uploader credentials are kept (hashed)."""
        return self.uploaders_file_override or self.keys_dir / "ingest-http" / "uploaders.json"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HttpSettings:
        shared = {name: _INGEST_ROWS[name].read(env)
                  for name in ("max_backlog", "health_max_age", "health_max_backlog")}
        return cls(redis_url=RedisConnection.from_env(env).url,
                   stream=INGEST_STREAM.read(env),
                   keys_dir=CHAIN_SETTINGS_BY_NAME["KEYS_DIR"].read(env),
                   **shared, **HTTP_SETTINGS.read(env))


_H = HttpSettings()
HTTP_SETTINGS = SettingsGroup(
    "Meter ingest HTTP endpoint", "ingest-http",
    "`POST /api/readings` takes a JSON array of signed readings (a meter database's bulk "
    "export) and queues the well-formed ones on `INGEST_STREAM`; see "
    "[docs/metering.md](metering.md#http-endpoint).",
    (
        Setting("INGEST_HTTP_HOST", "host", "str", _H.host,
                "listen address (`0.0.0.0` in a container)"),
        Setting("INGEST_HTTP_PORT", "port", "int", _H.port, "listen port", minimum=1),
        Setting("INGEST_HTTP_WORKERS", "workers", "int", _H.workers, "gunicorn workers",
                minimum=1),
        Setting("INGEST_HTTP_MAX_BODY_BYTES", "max_body_bytes", "int", _H.max_body_bytes,
                "largest upload accepted (413 above)", minimum=1),
        Setting("INGEST_HTTP_MAX_READINGS", "max_readings", "int", _H.max_readings,
                "most readings in one upload (413 above)", minimum=1),
        Setting("INGEST_HTTP_UPLOADERS_FILE", "uploaders_file_override", "optional_path", None,
                "the uploader credentials the operator issued (`pilotchain uploaders issue "
                "NAME`), stored hashed; read again whenever it changes",
                default_text="<KEYS_DIR>/ingest-http/uploaders.json"),
        Setting("INGEST_HTTP_ADDRESS_LIMIT", "address_limit", "int", _H.address_limit,
                "requests per minute from one client address (429 above, with Retry-After)",
                minimum=1),
        Setting("INGEST_HTTP_UPLOADER_LIMIT", "uploader_limit", "int", _H.uploader_limit,
                "readings per minute one uploader may queue (429 above, with Retry-After)",
                minimum=1),
    ),
)


@dataclass(frozen=True)
class MqttSettings:
    """The MQTT subscriber: the broker (MQTT_*), the stream it feeds, its own endpoint."""

    mqtt: MqttConnection = field(default_factory=MqttConnection)
    redis_url: str = DEFAULT_REDIS_URL
    stream: str = DEFAULT_STREAM
    dead_letter_stream: str = ""
    client_id: str = "pilotchain-ingest"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9111
    backoff_max: float = 10.0
    max_backlog: int = DEFAULT_MAX_BACKLOG
    dead_letter_maxlen: int = IngestSettings.dead_letter_maxlen

    def __post_init__(self) -> None:
        object.__setattr__(self, "dead_letter_stream",
                           dead_letter_name(self.dead_letter_stream, self.stream))

    @property
    def metrics_url(self) -> str:
        return local_url(self.metrics_host, self.metrics_port)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MqttSettings:
        shared = {name: _INGEST_ROWS[name].read(env)
                  for name in ("backoff_max", "max_backlog", "dead_letter_maxlen")}
        return cls(mqtt=MqttConnection.from_env(env),
                   redis_url=RedisConnection.from_env(env).url,
                   stream=INGEST_STREAM.read(env),
                   dead_letter_stream=INGEST_DEAD_LETTER_STREAM.read(env),
                   **shared, **MQTT_SUBSCRIBER_SETTINGS.read(env))


_M = MqttSettings()
MQTT_SUBSCRIBER_SETTINGS = SettingsGroup(
    "Meter ingest MQTT subscriber", "ingest-mqtt",
    "`pilotchain-ingest --mqtt` subscribes to `MQTT_TOPIC` with the ingest's account and "
    "appends each reading to `INGEST_STREAM` (malformed ones to its dead-letter stream, with "
    "the reason); see [docs/metering.md](metering.md#mqtt).",
    (
        Setting("INGEST_MQTT_CLIENT_ID", "client_id", "str", _M.client_id,
                "its MQTT client id, under which the broker keeps its persistent session's "
                "messages while it is away; the stack's broker replaces every client id with "
                "the account's name (here `MQTT_USERNAME`), so only a broker of your own uses "
                "this"),
        Setting("INGEST_MQTT_METRICS_HOST", "metrics_host", "str", _M.metrics_host,
                "metrics endpoint address (`0.0.0.0` in a container)"),
        Setting("INGEST_MQTT_METRICS_PORT", "metrics_port", "int", _M.metrics_port,
                "metrics endpoint port (`/metrics`, `/health`)", minimum=0),
    ),
)
