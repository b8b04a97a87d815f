"""Settings, read once at an entry point from the environment and a ``.env`` file.

Every service builds its typed settings here (or from :class:`EnvReader` in its own
``config`` module) and passes them down; nothing deeper reads ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from pilotchain.errors import ConfigError


def _project_root() -> Path:
    """The checkout (editable install), else PILOTCHAIN_HOME or the working directory.

    In the Compose image the package lives in site-packages and the project folder is
    mounted elsewhere, so relative paths resolve against the working directory there.
    """
    if home := os.environ.get("PILOTCHAIN_HOME"):
        return Path(home).resolve()
    checkout = Path(__file__).resolve().parent.parent
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()


PROJECT_ROOT = _project_root()


def load_environment(env_file: Path | None = None) -> dict[str, str]:
    """Merge ``.env`` (if present) under the process environment, which wins."""
    path = env_file if env_file is not None else PROJECT_ROOT / ".env"
    values: dict[str, str] = {}
    if path.is_file():
        values.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    values.update(os.environ)
    return values


class EnvReader:
    """Typed access to a snapshot of the environment, with errors that name the setting."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def str(self, name: str, default: str) -> str:
        value = self._env.get(name, "").strip()
        return value or default

    def optional(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        return value or None

    def int(self, name: str, default: int, *, minimum: int | None = None) -> int:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, not {raw!r}.") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, not {value}.")
        return value

    def float(self, name: str, default: float, *, minimum: float | None = None) -> float:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, not {raw!r}.") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, not {value}.")
        return value

    def bool(self, name: str, default: bool) -> bool:
        raw = self._env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in {"1", "true", "yes", "on"}:
            return True
        if raw in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name} must be true or false, not {raw!r}.")

    def path(self, name: str, default: Path) -> Path:
        raw = self._env.get(name, "").strip()
        path = Path(raw) if raw else default
        return path if path.is_absolute() else PROJECT_ROOT / path

    def list(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        return tuple(item.strip() for item in raw.split(",") if item.strip())


@dataclass(frozen=True)
class ChainSettings:
    """What the chain is (genesis) and where the native runner keeps its files."""

    chain_id: int = 8765
    block_period: int = 5
    epoch: int = 30000
    gas_limit: int = 60_000_000
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
    explorer_url: str = "http://localhost"
    rpc_url_override: str | None = None
    geth_bin_dir: Path = Path.home() / ".cache" / "pilotchain" / "geth-v1.13.15" / "bin"
    deployment_file_override: Path | None = None

    @property
    def deployment_file(self) -> Path:
        """Where the Settlement deployment record lives: with the chain data it belongs to,
        so wiping the chain forgets the contract too."""
        return self.deployment_file_override or self.data_dir / "settlement.json"

    @property
    def rpc_url(self) -> str:
        return self.rpc_url_override or f"http://{self.host}:{self.rpc_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ChainSettings:
        read = EnvReader(env)
        d = cls()
        return cls(
            chain_id=read.int("CHAIN_ID", d.chain_id, minimum=1),
            block_period=read.int("BLOCK_PERIOD", d.block_period, minimum=1),
            epoch=read.int("CLIQUE_EPOCH", d.epoch, minimum=1),
            gas_limit=read.int("GAS_LIMIT", d.gas_limit, minimum=5_000_000),
            network_name=read.str("NETWORK_NAME", d.network_name),
            currency_symbol=read.str("CURRENCY_SYMBOL", d.currency_symbol),
            keys_dir=read.path("KEYS_DIR", d.keys_dir),
            genesis_file=read.path("GENESIS_FILE", d.genesis_file),
            data_dir=read.path("NATIVE_DATA_DIR", d.data_dir),
            host=read.str("RPC_HOST", d.host),
            rpc_port=read.int("RPC_HTTP_PORT", d.rpc_port, minimum=1),
            ws_port=read.int("RPC_WS_PORT", d.ws_port, minimum=1),
            bootnode_port=read.int("BOOTNODE_PORT", d.bootnode_port, minimum=1),
            p2p_base_port=read.int("P2P_BASE_PORT", d.p2p_base_port, minimum=1),
            authrpc_base_port=read.int("AUTHRPC_BASE_PORT", d.authrpc_base_port, minimum=1),
            explorer_url=read.str("EXPLORER_URL", d.explorer_url),
            rpc_url_override=read.optional("RPC_URL"),
            geth_bin_dir=read.path("GETH_BIN_DIR", d.geth_bin_dir),
            deployment_file_override=(read.path("DEPLOYMENT_FILE", Path())
                                      if read.optional("DEPLOYMENT_FILE") else None),
        )
