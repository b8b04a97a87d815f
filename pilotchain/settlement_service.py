"""Deploying the Settlement contract as part of the stack, once per chain.

``./scripts/up`` deploys it when the record is missing or names no contract on this chain,
and keeps the deployed one across restarts; the bridge, the faucet and ``status --json``
read the record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pilotchain.chain import call, connect
from pilotchain.config import ChainSettings
from pilotchain.contract import (
    ContractError,
    Deployment,
    deploy_settlement,
    is_deployed,
    load_deployment,
    save_deployment,
)
from pilotchain.keys import KeyStore


class SettlementService:
    """The Settlement contract of one chain: deployed by the operator, bridge as recorder."""

    name = "settlement"

    def __init__(self, settings: ChainSettings, rpc_url: str | None = None) -> None:
        self.settings = settings
        self.rpc_url = rpc_url or settings.rpc_url
        self.record = settings.deployment_file

    def current(self) -> Deployment | None:
        """The recorded deployment if its contract exists on this chain, else None."""
        if not self.record.is_file():
            return None
        try:
            deployment = load_deployment(self.record, chain_id=self.settings.chain_id)
        except ContractError:
            return None
        w3 = connect(self.rpc_url)
        present = call(self.rpc_url, "Looking up the Settlement contract",
                       lambda: is_deployed(w3, deployment))
        return deployment if present else None

    def deploy(self, *, force: bool = False) -> tuple[Deployment, bool]:
        """Deploy unless a live deployment is recorded; return it and whether it is new."""
        existing = None if force else self.current()
        if existing is not None:
            return existing, False
        keys = KeyStore(self.settings.keys_dir)
        operator = keys.role("operator").unlock()
        deployment = deploy_settlement(connect(self.rpc_url), operator,
                                       keys.role("bridge").address)
        save_deployment(deployment, self.record)
        return deployment, True

    def start(self, net: Any = None) -> bool:
        if net is not None:
            self.rpc_url = net.rpc_url
        return self.deploy()[1]

    def stop(self) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        if not self.record.is_file():
            return {"settlement_address": None, "settlement_abi": None}
        try:
            deployment = load_deployment(self.record)
        except ContractError:
            return {"settlement_address": None, "settlement_abi": None}
        return {"settlement_address": deployment.address,
                "settlement_abi": str(Path(deployment.abi_path)),
                "settlement_deployment": str(self.record)}
