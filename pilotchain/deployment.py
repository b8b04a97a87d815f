"""The Settlement contract of one chain, deployed once: by ``pilotchain deploy`` and by
``./scripts/up``, which keep the deployed one across restarts; the bridge, the faucet and
``status --json`` read the record.
"""

from __future__ import annotations

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


def current_deployment(settings: ChainSettings, rpc_url: str) -> Deployment | None:
    """The recorded deployment if its contract exists on this chain, else None."""
    record = settings.deployment_file
    if not record.is_file():
        return None
    try:
        deployment = load_deployment(record, chain_id=settings.chain_id)
    except ContractError:
        return None
    w3 = connect(rpc_url)
    present = call(rpc_url, "Looking up the Settlement contract",
                   lambda: is_deployed(w3, deployment))
    return deployment if present else None


def ensure_deployed(settings: ChainSettings, rpc_url: str | None = None, *,
                    force: bool = False) -> tuple[Deployment, bool]:
    """Deploy (operator admin, bridge recorder) unless a live deployment is recorded;
    return it and whether it is new."""
    url = rpc_url or settings.rpc_url
    existing = None if force else current_deployment(settings, url)
    if existing is not None:
        return existing, False
    keys = KeyStore(settings.keys_dir)
    operator = keys.role("operator").unlock()
    deployment = deploy_settlement(connect(url), operator, keys.role("bridge").address)
    save_deployment(deployment, settings.deployment_file)
    return deployment, True
