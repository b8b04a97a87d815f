"""The slot closer's typed settings, declared once and read once by the entry point.

Chain, keys and the deployment record come from :class:`ChainSettings` (``RPC_URL``,
``KEYS_DIR``, ``DEPLOYMENT_FILE``, ...), like the bridge and the ingest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pilotchain.config import CHAIN_SETTINGS, ChainSettings
from pilotchain.settings import Setting, SettingsGroup, local_url

DEFAULT_METRICS_PORT = 9112


@dataclass(frozen=True)
class CloserSettings:
    """Everything the closer needs; every field but ``chain`` is a row of CLOSER_SETTINGS."""

    chain: ChainSettings = field(default_factory=ChainSettings)
    interval: float = 60.0
    key_role: str = "closer"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = DEFAULT_METRICS_PORT

    @property
    def metrics_url(self) -> str:
        return local_url(self.metrics_host, self.metrics_port)

    def to_env(self) -> dict[str, str]:
        """The environment that makes ``from_env`` (in a closer process) give these back."""
        chain = self.chain
        return {**CHAIN_SETTINGS.to_env(chain), "RPC_URL": chain.rpc_url,
                "DEPLOYMENT_FILE": str(chain.deployment_file), **CLOSER_SETTINGS.to_env(self)}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CloserSettings:
        """Typed settings from an environment snapshot; errors name the setting."""
        return cls(chain=ChainSettings.from_env(env), **CLOSER_SETTINGS.read(env))


_D = CloserSettings()
CLOSER_SETTINGS = SettingsGroup(
    "Slot closer", "closer",
    "The slot closer (`pilotchain-closer`) closes every due, still-open slot of every metered "
    "participant with `closeSlots`, so each is balanced or closed as unmetered; it also reads "
    "the chain settings (`RPC_URL`, `KEYS_DIR`, `DEPLOYMENT_FILE`). See "
    "[docs/operations.md](operations.md#closing-slots).",
    (
        Setting("CLOSER_INTERVAL", "interval", "float", _D.interval,
                "seconds between passes (a pass reads the new events and closes what is due)",
                minimum=1.0),
        Setting("CLOSER_KEY_ROLE", "key_role", "str", _D.key_role,
                "which account of `KEYS_DIR` pays the gas (`keys/<role>/`; no contract role "
                "needed)"),
        Setting("CLOSER_METRICS_HOST", "metrics_host", "str", _D.metrics_host,
                "metrics endpoint address (`0.0.0.0` in a container)"),
        Setting("CLOSER_METRICS_PORT", "metrics_port", "int", _D.metrics_port,
                "metrics endpoint port (`/metrics`, `/health`)", minimum=0),
    ),
)
