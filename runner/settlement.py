"""The Settlement contract as a step of ``./scripts/up``: deployed once per chain."""

from __future__ import annotations

from typing import Any

from pilotchain.config import ChainSettings
from pilotchain.contract import ContractError, load_deployment
from pilotchain.deployment import ensure_deployed
from runner.localnet import LocalNetwork


class SettlementService:
    """Deploys Settlement when the record is missing or names no contract on this chain."""

    name = "settlement"

    def __init__(self, settings: ChainSettings) -> None:
        self.settings = settings

    def start(self, net: LocalNetwork | None = None) -> bool:
        return ensure_deployed(self.settings, net.rpc_url if net else None)[1]

    def stop(self) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        record = self.settings.deployment_file
        try:
            deployment = load_deployment(record)
        except ContractError:
            return {"settlement_address": None, "settlement_abi": None}
        return {"settlement_address": deployment.address,
                "settlement_abi": str(deployment.abi_path),
                "settlement_deployment": str(record)}
