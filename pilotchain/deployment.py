"""The Settlement contract of one chain, deployed once: by ``pilotchain deploy`` and by
``./scripts/up``, which keep the deployed one across restarts; the bridge, the faucet and
``status --json`` read the record.

Every run (new or existing deployment) also makes sure the meter ingest's account can work:
funded by the operator and holding READER_ROLE, so an existing pilot gets a working reader
on its next ``./scripts/up`` without a new genesis.
"""

from __future__ import annotations

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import Wei

from pilotchain.chain import Sender, call, connect, wait_for_receipt
from pilotchain.config import ChainSettings
from pilotchain.contract import (
    ContractError,
    Deployment,
    deploy_settlement,
    is_deployed,
    load_deployment,
    save_deployment,
    settlement_contract,
)
from pilotchain.errors import ChainError
from pilotchain.genesis import ETHER
from pilotchain.keys import KeyStore, Role

# What the operator gives the ingest account; topped up when it falls below half. At 1 gwei
# and ~50k gas a reading, 1,000 ether pays for about 20 billion readings.
READER_FUNDING = 1_000 * ETHER


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
    recorded, and make sure the ingest account is funded and holds READER_ROLE either way;
    return the deployment and whether it is new."""
    url = rpc_url or settings.rpc_url
    existing = None if force else current_deployment(settings, url)
    keys = KeyStore(settings.keys_dir)
    reader = keys.role("ingest")
    reader_address = reader.address if (reader.directory / "address").is_file() else None
    if existing is not None:
        if reader_address is not None:
            ensure_reader(connect(url), keys.role("operator"), existing, reader_address)
        return existing, False
    operator = keys.role("operator").unlock()
    deployment = deploy_settlement(connect(url), operator, keys.role("bridge").address,
                                   reader=reader_address)
    save_deployment(deployment, settings.deployment_file)
    if reader_address is not None:
        ensure_reader(connect(url), operator, deployment, reader_address)
    return deployment, True


def ensure_reader(w3: Web3, operator: LocalAccount | Role, deployment: Deployment,
                  reader: str, funding: int = READER_FUNDING) -> list[str]:
    """Fund ``reader`` from the operator and grant it READER_ROLE, whichever is missing;
    return what was done. ``operator`` is an unlocked account or a keys Role, unlocked
    only if something must be sent (unlocking costs half a second of scrypt)."""
    contract = settlement_contract(w3, deployment)
    functions = contract.functions
    role = call("the RPC node", "Reading READER_ROLE", lambda: functions.READER_ROLE().call())
    has_role = call("the RPC node", "Checking the reader role",
                    lambda: functions.hasRole(role, reader).call())
    balance = call("the RPC node", "Reading the ingest balance",
                   lambda: w3.eth.get_balance(Web3.to_checksum_address(reader)))
    needs_funds = balance < funding // 2
    if has_role and not needs_funds:
        return []
    account = operator.unlock() if isinstance(operator, Role) else operator
    sender = Sender(w3, account)
    done, hashes = [], []
    try:
        if needs_funds:
            hashes.append(sender.send({"to": Web3.to_checksum_address(reader),
                                       "value": Wei(funding - balance), "gas": 21_000}))
            done.append("funded")
        if not has_role:
            data = contract.encode_abi("grantRole", args=[role, reader])
            hashes.append(sender.send({"to": contract.address, "data": data}))
            done.append("granted READER_ROLE")
        for tx_hash in hashes:
            if wait_for_receipt(w3, tx_hash)["status"] != 1:
                raise ContractError(f"Setting up the ingest account {reader} failed: "
                                    f"transaction {tx_hash.to_0x_hex()} reverted.")
    except ChainError as error:
        raise ContractError(f"Setting up the ingest account {reader} failed: {error}") from None
    return done
