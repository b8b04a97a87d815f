"""The chain's settings, and how every service reaches Redis.

Each service declares its own settings (``pilotchain.settings.Setting``) in its ``config``
module and reads them once at its entry point; nothing deeper reads ``os.environ``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from eth_utils.address import is_address, to_checksum_address

from pilotchain.errors import ConfigError
from pilotchain.settings import PROJECT_ROOT, Setting, SettingsGroup

__all__ = ["BRIDGE_DEAD_LETTER_STREAM", "BRIDGE_STREAM", "CHAIN_SETTINGS", "DEFAULT_REDIS_URL",
           "INGEST_DEAD_LETTER_STREAM", "INGEST_STREAM", "REDIS_SETTINGS", "REDIS_URL",
           "ChainSettings", "DeadLetterStreams", "RedisConnection", "dead_letter_name",
           "masked_url"]

DEFAULT_GETH_BIN_DIR = Path.home() / ".cache" / "pilotchain" / "geth-v1.13.15" / "bin"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_TRADE_STREAM = "pilotchain:trades"
DEFAULT_READING_STREAM = "pilotchain:readings"

@dataclass(frozen=True)
class ChainSettings:
    """What the chain is (genesis) and where the native runner keeps its files."""

    chain_id: int = 8765
    block_period: int = 5
    epoch: int = 30000
    gas_limit: int = 60_000_000
    # geth's own default. Its database preallocates a write-ahead log of about an eighth of
    # this on disk, and keeps up to three: some 400 MB per node at 1024.
    geth_cache_mb: int = 1024
    network_name: str = "PilotChain"
    currency_symbol: str = "PILOT"
    keys_dir: Path = PROJECT_ROOT / "keys"
    genesis_file: Path = PROJECT_ROOT / "genesis.json"
    data_dir: Path = PROJECT_ROOT / "data" / "native"
    host: str = "127.0.0.1"
    rpc_port: int = 8545
    ws_port: int = 8546
    bootnode_port: int = 30301
    p2p_base_port: int = 30303
    authrpc_base_port: int = 8551
    # None natively (the native stack runs no explorer): no page links to one then.
    explorer_url: str = ""
    rpc_url_override: str | None = None
    rpc_cors_origins: tuple[str, ...] = ()
    rpc_vhosts: tuple[str, ...] = ()
    geth_bin_dir: Path = DEFAULT_GETH_BIN_DIR
    deployment_file_override: Path | None = None
    manifest_file: Path = PROJECT_ROOT / "network.json"
    manifest_signer: str | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_addr: str = "0.0.0.0"
    tls_port: int = 8443
    sealing_exporter_port: int = 9113
    prometheus_port: int = 9090
    geth_metrics_addr: str = "127.0.0.1"
    geth_metrics_base_port: int = 6060

    @property
    def deployment_file(self) -> Path:
        """Where the Settlement deployment record lives: with the chain data it belongs to,
        so wiping the chain forgets the contract too."""
        return self.deployment_file_override or self.data_dir / "settlement.json"

    @property
    def nodes_dir(self) -> Path:
        """One data directory per geth node of the native runner (``<name>/geth.ipc``...)."""
        return self.data_dir / "nodes"

    @property
    def rpc_url(self) -> str:
        return self.rpc_url_override or f"http://{self.host}:{self.rpc_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ChainSettings:
        """Typed settings from an environment snapshot; errors name the setting."""
        return cls(**CHAIN_SETTINGS.read(env))


def _signer_address(value: str | None, env: Mapping[str, str]) -> str | None:
    """MANIFEST_SIGNER as a checksummed address."""
    if value is None:
        return None
    if not is_address(value):
        raise ConfigError(f"MANIFEST_SIGNER must be an address (0x and 40 hex digits), not "
                          f"{value!r}.")
    return to_checksum_address(value)


def _tls_key(value: Path | None, env: Mapping[str, str]) -> Path | None:
    """The key goes with the certificate: one without the other is a mistake."""
    if (value is None) != (env.get("RPC_TLS_CERT_FILE", "").strip() == ""):
        raise ConfigError("RPC_TLS_CERT_FILE and RPC_TLS_KEY_FILE go together: set both (the "
                          "RPC node's HTTPS proxy) or neither.")
    return value


def check_origins(origins: tuple[str, ...], env: Mapping[str, str]) -> tuple[str, ...]:
    """Web origins as browsers send them: scheme://host[:port], nothing after; or ``*``."""
    del env
    for origin in origins:
        parts = urlsplit(origin)
        if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc
                              or parts.path not in ("", "/") or parts.query):
            raise ConfigError(f"RPC_CORS_ORIGINS must list web origins such as "
                              f"https://app.example.org or http://localhost:3000 (or *), "
                              f"not {origin!r}.")
    return tuple(origin.rstrip("/") for origin in origins)


def check_vhosts(hosts: tuple[str, ...], env: Mapping[str, str]) -> tuple[str, ...]:
    """Host names without scheme or port (geth compares the Host header's name alone)."""
    del env
    for host in hosts:
        if host != "*" and not re.fullmatch(r"[A-Za-z0-9.-]+", host):
            raise ConfigError(f"RPC_VHOSTS must list host names such as rpc.example.org "
                              f"(no scheme, no port), or *, not {host!r}.")
    return tuple(host.lower() for host in hosts)


_D = ChainSettings()
CHAIN_SETTINGS = SettingsGroup(
    "Chain and native runner", "chain",
    "What the chain is (written into genesis.json by `pilotchain init`) and where "
    "`./scripts/up` keeps its files and opens its ports. Every service reads these too.",
    (
        Setting("CHAIN_ID", "chain_id", "int", _D.chain_id,
                "chain id, written into genesis by `init`", minimum=1),
        Setting("BLOCK_PERIOD", "block_period", "int", _D.block_period,
                "seconds between blocks, written into genesis by `init` (tests use 1)",
                minimum=1),
        Setting("CLIQUE_EPOCH", "epoch", "int", _D.epoch,
                "Clique epoch, written into genesis by `init`", minimum=1),
        Setting("GAS_LIMIT", "gas_limit", "int", _D.gas_limit,
                "block gas limit in genesis and the validators' `--miner.gaslimit`",
                minimum=5_000_000),
        Setting("GETH_CACHE_MB", "geth_cache_mb", "int", _D.geth_cache_mb,
                "every node's `--cache` in MB; each node's database preallocates some 40% of "
                "it on disk (the tests' small networks use 64)", minimum=16),
        Setting("NETWORK_NAME", "network_name", "str", _D.network_name,
                "network name shown to MetaMask users"),
        Setting("CURRENCY_SYMBOL", "currency_symbol", "str", _D.currency_symbol,
                "native currency symbol shown to MetaMask users"),
        Setting("KEYS_DIR", "keys_dir", "path", _D.keys_dir,
                "where `init` writes keys and the services find theirs"),
        Setting("GENESIS_FILE", "genesis_file", "path", _D.genesis_file, "the genesis file"),
        Setting("NATIVE_DATA_DIR", "data_dir", "path", _D.data_dir,
                "the native runner's chain data, logs, pids and deployment record"),
        Setting("DEPLOYMENT_FILE", "deployment_file_override", "optional_path", None,
                "the Settlement deployment record (`pilotchain deploy` writes it)",
                default_text="<NATIVE_DATA_DIR>/settlement.json"),
        Setting("RPC_HOST", "host", "str", _D.host,
                "address the native RPC node listens on"),
        Setting("RPC_HTTP_PORT", "rpc_port", "int", _D.rpc_port, "RPC node HTTP port",
                minimum=1),
        Setting("RPC_WS_PORT", "ws_port", "int", _D.ws_port, "RPC node WebSocket port",
                minimum=1),
        Setting("BOOTNODE_PORT", "bootnode_port", "int", _D.bootnode_port,
                "bootnode discovery (UDP) port", minimum=1),
        Setting("P2P_BASE_PORT", "p2p_base_port", "int", _D.p2p_base_port,
                "base of the nodes' p2p ports (TCP and UDP): validator1 takes the base + 1, "
                "validator2 + 2, validator3 + 3, the RPC node + 4", minimum=1),
        Setting("AUTHRPC_BASE_PORT", "authrpc_base_port", "int", _D.authrpc_base_port,
                "base of geth's engine API ports (loopback, JWT), numbered like "
                "`P2P_BASE_PORT`: validator1 takes the base + 1, ..., the RPC node + 4",
                minimum=1),
        Setting("RPC_CORS_ORIGINS", "rpc_cors_origins", "list", (),
                "origins of further web pages (`https://app.example.org`) that may use the "
                "RPC node from a visitor's browser, besides the stack's own (the faucet's, "
                "the portal's and the explorer's); `*`: any page. Wallets such as MetaMask "
                "need none", check=check_origins),
        Setting("RPC_VHOSTS", "rpc_vhosts", "list", (),
                "further host names the RPC node answers HTTP under, besides `localhost` "
                "(and `RPC_HOST`; IP addresses always); `*`: any name",
                check=check_vhosts),
        Setting("RPC_URL", "rpc_url_override", "optional", None,
                "where `pilotchain deploy` and the services reach the chain",
                default_text="http://<RPC_HOST>:<RPC_HTTP_PORT>"),
        Setting("EXPLORER_URL", "explorer_url", "str", _D.explorer_url,
                "the block explorer users are linked to (Compose sets its Blockscout's); "
                "unset, pages show transaction hashes without links", default_text="(none)"),
        Setting("GETH_BIN_DIR", "geth_bin_dir", "path", _D.geth_bin_dir,
                "where geth and bootnode 1.13.15 are (`./scripts/up` builds them there)",
                default_text="~/.cache/pilotchain/geth-v1.13.15/bin"),
        Setting("NETWORK_MANIFEST", "manifest_file", "path", _D.manifest_file,
                "the network manifest of a network of several organisations' hosts (written "
                "and signed by the coordinator, checked by `./scripts/up --role` before a node "
                "starts); see docs/deployment.md"),
        Setting("MANIFEST_SIGNER", "manifest_signer", "optional", None,
                "the coordinator's address: a manifest signed by any other key is refused "
                "(required with `--role`)", check=_signer_address),
        Setting("RPC_TLS_CERT_FILE", "tls_cert_file", "optional_path", None,
                "certificate (PEM, with its chain) of the RPC node's HTTPS proxy (nginx); when "
                "set, the RPC node is served to participants over HTTPS"),
        Setting("RPC_TLS_KEY_FILE", "tls_key_file", "optional_path", None,
                "the certificate's private key (PEM)", check=_tls_key),
        Setting("RPC_TLS_ADDR", "tls_addr", "str", _D.tls_addr,
                "address the HTTPS proxy listens on"),
        Setting("RPC_TLS_PORT", "tls_port", "int", _D.tls_port,
                "port of the HTTPS proxy (443 needs root or CAP_NET_BIND_SERVICE)", minimum=1),
        Setting("SEALING_EXPORTER_PORT", "sealing_exporter_port", "int",
                _D.sealing_exporter_port,
                "loopback port of `pilotchain network exporter` (who seals, for Prometheus)",
                minimum=1),
        Setting("GETH_METRICS_ADDR", "geth_metrics_addr", "str", _D.geth_metrics_addr,
                "address geth's own metrics listen on (`/debug/metrics/prometheus`): loopback, "
                "or a private address a Prometheus elsewhere reaches; never a public one"),
        Setting("GETH_METRICS_BASE_PORT", "geth_metrics_base_port", "int",
                _D.geth_metrics_base_port,
                "base of the nodes' metrics ports, numbered like `P2P_BASE_PORT`: validator1 "
                "takes the base + 1, ..., the RPC node + 4 (`0`: geth's metrics off)",
                minimum=0),
        Setting("PROMETHEUS_PORT", "prometheus_port", "int", _D.prometheus_port,
                "loopback port of the Prometheus `./scripts/up --monitoring` starts",
                minimum=1),
    ),
)


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``****``, for logs and status output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:****@{host}"))


@dataclass(frozen=True)
class RedisConnection:
    """How every service reaches Redis: ``REDIS_URL`` as given, else the stack's own Redis at
    REDIS_HOST:REDIS_PORT with the password ``pilotchain init`` generated."""

    host: str = "127.0.0.1"
    port: int = 6379
    password: str | None = field(default=None, repr=False)
    url_override: str | None = field(default=None, repr=False)
    # The stack's own Redis only (REDIS_URL's is configured by whoever runs it).
    maxmemory: str = "1gb"

    @property
    def external(self) -> bool:
        """Whether REDIS_URL names a Redis the stack does not run."""
        return self.url_override is not None

    @property
    def url(self) -> str:
        """The URL clients connect with, password included: never print it, see shown_url."""
        if self.url_override is not None:
            return self.url_override
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def shown_url(self) -> str:
        return masked_url(self.url)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RedisConnection:
        """Typed from the environment; the password is read from its file here, once."""
        values = REDIS_SETTINGS.read(env)
        explicit = values["password_file"]
        keys_dir = CHAIN_SETTINGS_BY_NAME["KEYS_DIR"].read(env)
        password_file = explicit or keys_dir / "redis" / "password"
        try:
            password = password_file.read_text().strip() or None
        except FileNotFoundError:
            if explicit is not None:
                raise ConfigError(
                    f"REDIS_PASSWORD_FILE names {password_file}, which does not exist; run "
                    "'pilotchain init' to create the Redis password, or correct the setting."
                ) from None
            password = None  # a checkout from before Redis had a password: up creates one
        except OSError as error:
            raise ConfigError(f"The Redis password file {password_file} cannot be read "
                              f"({error.strerror}).") from None
        return cls(host=values["host"], port=values["port"], password=password,
                   url_override=values["url_override"], maxmemory=values["maxmemory"])


def check_memory(value: str, env: Mapping[str, str]) -> str:
    """A Redis memory size: a whole number with kb, mb or gb (not 0: that is no limit)."""
    del env
    text = value.strip().lower()
    number, unit = text.rstrip("kmgb"), text[len(text.rstrip("kmgb")):]
    if not number.isdigit() or int(number) == 0 or unit not in ("", "kb", "mb", "gb"):
        raise ConfigError(f"REDIS_MAXMEMORY must be a size like 512mb or 2gb (not 0, which "
                          f"would mean no limit), not {value!r}.")
    return text


# The Redis of the trade stream and the faucet's limits: declared once, read by every service.
REDIS_URL = Setting(
    "REDIS_URL", "url_override", "optional", None,
    "a Redis you run yourself, password included (`redis://:PASSWORD@host:6379/0`); when "
    "set, `./scripts/up` starts no Redis of its own and the three settings above are unused",
    default_text="redis://:<password>@<REDIS_HOST>:<REDIS_PORT>/0")

REDIS_SETTINGS = SettingsGroup(
    "Redis", "redis",
    "The Redis that holds the trade stream and the faucet's claim limits, shared by every "
    "service. `./scripts/up` runs Debian's redis-server (append-only, in "
    "`<NATIVE_DATA_DIR>/redis`) with the password `pilotchain init` generated, unless "
    "`REDIS_URL` names one you run yourself.",
    (
        Setting("REDIS_HOST", "host", "str", "127.0.0.1",
                "where the stack's Redis listens (`./scripts/up` starts it there)"),
        Setting("REDIS_PORT", "port", "int", 6379, "its port", minimum=1),
        Setting("REDIS_PASSWORD_FILE", "password_file", "optional_path", None,
                "the file holding its password (generated by `pilotchain init`, never "
                "committed)", default_text="<KEYS_DIR>/redis/password"),
        REDIS_URL,
        Setting("REDIS_MAXMEMORY", "maxmemory", "str", "1gb",
                "the most memory the stack's Redis uses; at the limit it refuses new writes "
                "(`noeviction`: the ingest's endpoint answers 503, the subscriber waits) and "
                "never evicts a stream entry", check=check_memory),
    ),
)

def stream_rows(prefix: str, default: str, stream_help: str, refused: str
                ) -> tuple[Setting, Setting]:
    """``<prefix>_STREAM`` and ``<prefix>_DEAD_LETTER_STREAM`` (unset: ``<stream>:dead``)."""
    return (Setting(f"{prefix}_STREAM", "stream", "str", default, stream_help),
            Setting(f"{prefix}_DEAD_LETTER_STREAM", "dead_letter_stream", "str", "",
                    f"{refused}, each with `reason`, `entry_id`, `event`, `rejected_at`",
                    default_text=f"<{prefix}_STREAM>:dead"))


# The Redis streams' names, declared once: listed in the bridge's and the ingest's settings,
# read also by the portal, which shows what waits in their dead-letter streams.
BRIDGE_STREAM, BRIDGE_DEAD_LETTER_STREAM = stream_rows(
    "BRIDGE", DEFAULT_TRADE_STREAM, "the Redis stream gsy-e's plug-in writes and the bridge reads",
    "rejected entries")
INGEST_STREAM, INGEST_DEAD_LETTER_STREAM = stream_rows(
    "INGEST", DEFAULT_READING_STREAM,
    "the Redis stream of signed readings (field `reading`, the JSON object)", "refused readings")


def dead_letter_name(configured: str, stream: str) -> str:
    """A dead-letter stream's name: as configured, else ``<stream>:dead``."""
    return configured or f"{stream}:dead"


@dataclass(frozen=True)
class DeadLetterStreams:
    """Where the bridge and the ingest put the entries they refuse."""

    trades: str = dead_letter_name("", DEFAULT_TRADE_STREAM)
    readings: str = dead_letter_name("", DEFAULT_READING_STREAM)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DeadLetterStreams:
        return cls(
            trades=dead_letter_name(BRIDGE_DEAD_LETTER_STREAM.read(env),
                                      BRIDGE_STREAM.read(env)),
            readings=dead_letter_name(INGEST_DEAD_LETTER_STREAM.read(env),
                                        INGEST_STREAM.read(env)))


CHAIN_SETTINGS_BY_NAME = {setting.name: setting for setting in CHAIN_SETTINGS.settings}


# The broker's health-check account: it may connect and nothing else. Probes connect with it,
# never with the ingest's, whose client id (its account name) they would take over.
MONITOR_USERNAME = "monitor"


@dataclass(frozen=True)
class MqttConnection:
    """The meters' MQTT broker: where it listens, the topic, the ingest's account (reads
    every meter's topic), the monitor's (connects, for health checks) with the passwords
    ``pilotchain init`` generated, and the file of the meters' own accounts (one each,
    issued when a meter is registered)."""

    host: str = "127.0.0.1"
    port: int = 1883
    topic: str = "pilotchain/meters/+/readings"
    username: str = "ingest"
    password: str | None = field(default=None, repr=False)
    monitor_password: str | None = field(default=None, repr=False)
    meter_accounts: Path | None = None

    @property
    def url(self) -> str:
        """The broker's address (no credentials: they are never in a URL we print)."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def meters_pattern(self) -> str:
        """The access-list pattern of a meter's own topic: its account name for ``+``."""
        return self.topic.replace("+", "%u", 1)

    def topic_for(self, meter: str) -> str:
        """The topic a meter publishes on: the pattern with ``+`` replaced by its id."""
        return self.topic.replace("+", meter, 1)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MqttConnection:
        """Typed from the environment; the passwords are read from their files here, once."""
        values = MQTT_SETTINGS.read(env)
        keys_dir = CHAIN_SETTINGS_BY_NAME["KEYS_DIR"].read(env)
        passwords = []
        ingest_file = (values["password_file"]
                       or keys_dir / "mqtt" / f"{values['username']}.password")
        for path in (ingest_file, keys_dir / "mqtt" / f"{MONITOR_USERNAME}.password"):
            try:
                passwords.append(path.read_text().strip() or None)
            except FileNotFoundError:
                passwords.append(None)  # before `pilotchain init` made it; up creates it
            except OSError as error:
                raise ConfigError(f"The MQTT password file {path} cannot be read "
                                  f"({error.strerror}).") from None
        return cls(host=values["host"], port=values["port"], topic=values["topic"],
                   username=values["username"], password=passwords[0],
                   monitor_password=passwords[1],
                   meter_accounts=values["meter_accounts"] or
                   keys_dir / "mqtt" / "meters.passwd")


def check_topic(value: str, env: Mapping[str, str]) -> str:
    """A topic pattern with exactly one ``+`` standing for the meter (its access list binds
    that level to the meter's account)."""
    del env
    levels = value.split("/")
    if levels.count("+") != 1 or "#" in value or any("+" in level and level != "+"
                                                     for level in levels):
        raise ConfigError(f"MQTT_TOPIC must hold exactly one '+' level, standing for the meter "
                          f"(like pilotchain/meters/+/readings), and no '#', not {value!r}.")
    return value


MQTT_SETTINGS = SettingsGroup(
    "MQTT", "mqtt",
    "The broker the meters publish their signed readings to. `./scripts/up` runs Debian's "
    "mosquitto there: no anonymous access; each meter has its own account, issued when it is "
    "registered (`pilotchain meters register`, `pilotchain meters mqtt-password`), that may "
    "publish on its own topic only; every client id is bound to its account. The ingest's "
    "and the monitor's passwords are generated by `pilotchain init`, never committed.",
    (
        Setting("MQTT_HOST", "host", "str", "127.0.0.1", "where the broker listens"),
        Setting("MQTT_PORT", "port", "int", 1883, "its port", minimum=1),
        Setting("MQTT_TOPIC", "topic", "str", "pilotchain/meters/+/readings",
                "the readings' topic; `+` stands for the meter's account, its id as 0x and "
                "64 hex digits", check=check_topic),
        Setting("MQTT_USERNAME", "username", "str", "ingest",
                "the ingest's account (reads every meter's topic)"),
        Setting("MQTT_PASSWORD_FILE", "password_file", "optional_path", None,
                "its password (generated by `pilotchain init`)",
                default_text="<KEYS_DIR>/mqtt/<MQTT_USERNAME>.password"),
        Setting("MQTT_METER_ACCOUNTS_FILE", "meter_accounts", "optional_path", None,
                "the meters' own accounts, hashed in mosquitto's format (written when a "
                "meter is registered or given a new password)",
                default_text="<KEYS_DIR>/mqtt/meters.passwd"),
    ),
)
