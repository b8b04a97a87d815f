"""The Settlement contract of one chain, deployed once: by ``pilotchain deploy`` and by
``./scripts/up``, which keep the deployed one across restarts; the bridge, the faucet and
``status --json`` read the record.

Every run (new or existing deployment) also makes sure the accounts created after genesis
(:data:`pilotchain.keys.LATE_ROLES`) can work: each funded by the operator and holding its
contract role (the meter ingest READER_ROLE; the slot closer needs none), so an existing pilot
gets them working on its next ``./scripts/up`` without a new genesis.
"""

from __future__ import annotations

import logging
from pathlib import Path

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.types import Wei

from pilotchain.chain import Sender, call, connect, wait_for_receipt
from pilotchain.config import ChainSettings
from pilotchain.contract import (
    ContractError,
    Deployment,
    DeploymentReverted,
    complete_deployment,
    deploy_settlement,
    is_deployed,
    load_deployment,
    load_signed_deployment,
    save_deployment,
    save_signed_deployment,
)
from pilotchain.errors import ChainError
from pilotchain.genesis import ETHER
from pilotchain.keys import LATE_ROLES, KeyStore, Role
from pilotchain.settlement import Settlement

# What the operator gives each late account; topped up when it falls below half. At 1 gwei
# and ~50k gas a reading or a closed slot, 1,000 ether pays for about 20 billion of them.
READER_FUNDING = 1_000 * ETHER
# The contract role each late account needs (None: only gas).
LATE_ACCOUNT_ROLES: dict[str, str | None] = {"ingest": "READER_ROLE", "closer": None}

log = logging.getLogger(__name__)


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
    """Deploy (operator admin, bridge recorder, ingest reader) unless a live deployment is
    recorded, and make sure every late account is funded and holds its role either way;
    return the deployment and whether it is new."""
    url = rpc_url or settings.rpc_url
    existing = None if force else current_deployment(settings, url)
    keys = KeyStore(settings.keys_dir)
    late = {name: keys.role(name).address for name in LATE_ROLES
            if (keys.role(name).directory / "address").is_file()}
    operator: LocalAccount | Role = keys.role("operator")
    deployment, new = existing, False
    if deployment is None:
        operator = keys.role("operator").unlock()
        deployment = _deploy(settings, url, operator, keys.role("bridge").address,
                             reader=late.get("ingest"))
        new = True
    for name, address in late.items():
        ensure_account(connect(url), operator, deployment, address,
                       role=LATE_ACCOUNT_ROLES[name], what=f"the {name} account")
    return deployment, new


def in_flight_file(deployment_file: Path) -> Path:
    """Where a deploy keeps its signed transaction until the contract is recorded."""
    return deployment_file.with_name(f"{deployment_file.stem}.in-flight.json")


def _deploy(settings: ChainSettings, url: str, operator: LocalAccount, recorder: str, *,
            reader: str | None) -> Deployment:
    """Deploy and record Settlement; first complete a deployment an earlier run signed and
    maybe sent but did not record (it died awaiting it: Compose then starts it again), so
    a chain never gets a second Settlement from a restart."""
    w3 = connect(url)
    pending = in_flight_file(settings.deployment_file)
    deployment = None
    signed = load_signed_deployment(pending)
    if signed is not None and (signed.chain_id, signed.sender.lower()) == (
            settings.chain_id, operator.address.lower()):
        log.info("Completing the deployment %s in flight since an earlier run.",
                 signed.transaction_hash)
        try:
            deployment = complete_deployment(w3, signed)
        except DeploymentReverted as reverted:
            log.warning("%s Deploying again.", reverted)
    if deployment is None:
        deployment = deploy_settlement(
            w3, operator, recorder, reader=reader,
            on_signed=lambda signed: save_signed_deployment(signed, pending))
    save_deployment(deployment, settings.deployment_file)
    pending.unlink(missing_ok=True)
    return deployment


def ensure_reader(w3: Web3, operator: LocalAccount | Role, deployment: Deployment,
                  reader: str, funding: int = READER_FUNDING) -> list[str]:
    """Fund ``reader`` from the operator and grant it READER_ROLE, whichever is missing."""
    return ensure_account(w3, operator, deployment, reader, role="READER_ROLE",
                          funding=funding, what="the ingest account")


def ensure_account(w3: Web3, operator: LocalAccount | Role, deployment: Deployment,
                   address: str, *, role: str | None, funding: int = READER_FUNDING,
                   what: str = "the account") -> list[str]:
    """Fund ``address`` from the operator and grant it the contract role named ``role`` (if
    any), whichever is missing; return what was done. ``operator`` is an unlocked account or
    a keys Role, unlocked only if something must be sent (unlocking costs half a second of
    scrypt)."""
    contract = Settlement.at(w3, "the RPC node", deployment)
    role_id, has_role = bytes(32), True
    if role is not None:
        role_id = call(contract.url, f"Reading {role}",
                       lambda: contract.call(contract.abi.role(role)))
        has_role = call(contract.url, f"Checking {what}'s role",
                        lambda: contract.call(contract.abi.has_role(role_id, address)))
    balance = call("the RPC node", f"Reading {what}'s balance",
                   lambda: w3.eth.get_balance(Web3.to_checksum_address(address)))
    needs_funds = balance < funding // 2
    needs_role = not has_role
    if not needs_role and not needs_funds:
        return []
    account = operator.unlock() if isinstance(operator, Role) else operator
    sender = Sender(w3, account)
    done, hashes = [], []
    try:
        if needs_funds:
            hashes.append(sender.send({"to": Web3.to_checksum_address(address),
                                       "value": Wei(funding - balance), "gas": 21_000}))
            done.append("funded")
        if needs_role:
            data = contract.abi.grant_role(role_id, address)
            hashes.append(sender.send({"to": contract.address, "data": HexBytes(data)}))
            done.append(f"granted {role}")
        for tx_hash in hashes:
            if wait_for_receipt(w3, tx_hash)["status"] != 1:
                raise ContractError(f"Setting up {what} {address} failed: "
                                    f"transaction {tx_hash.to_0x_hex()} reverted.")
    except ChainError as error:
        raise ContractError(f"Setting up {what} {address} failed: {error}") from None
    return done
