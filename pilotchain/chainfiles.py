"""The files that define a chain: every key and ``genesis.json``, created once by ``init``,
and the password of the stack's Redis beside the keys.

``pilotchain init`` (natively and in Compose's one-shot ``init``) and the native runner
both call :func:`create_chain_files`; it never overwrites unless told to.
"""

from __future__ import annotations

from pilotchain.config import ChainSettings
from pilotchain.errors import NetworkError
from pilotchain.genesis import build_genesis, read_genesis, write_genesis
from pilotchain.keys import SERVICE_ROLES, KeyStore


def create_chain_files(settings: ChainSettings, *, force: bool = False, fast_keys: bool = False,
                       has_chain_data: bool = False) -> list[str]:
    """Create missing keys and genesis.json; return what was created.

    ``has_chain_data`` says whether a chain built on the current genesis exists: new keys
    would then need a new genesis, which would orphan that chain, so this refuses.
    """
    keys = KeyStore(settings.keys_dir)
    created = keys.ensure(force=force, fast=fast_keys)
    genesis_file = settings.genesis_file
    if force or not genesis_file.is_file() or created:
        if genesis_file.is_file() and not force and has_chain_data:
            raise NetworkError(
                f"New keys were created but {settings.data_dir} holds a chain built on the old "
                f"genesis; run './scripts/down --wipe' first, or restore the old keys."
            )
        signers = [role.address for role in keys.validators()]
        funded = {name: keys.role(name).address for name in SERVICE_ROLES}
        write_genesis(genesis_file, build_genesis(settings, signers, funded))
        created.append(genesis_file.name)
    if keys.ensure_redis_password():
        created.append("redis/password")
    created.extend(keys.ensure_late_accounts(fast=fast_keys))
    created.extend(keys.ensure_mqtt_passwords())
    check_genesis(settings)
    return created


def check_genesis(settings: ChainSettings) -> None:
    """Refuse a genesis.json written for another chain id than CHAIN_ID."""
    genesis = read_genesis(settings.genesis_file)
    chain_id = genesis["config"]["chainId"]
    if chain_id != settings.chain_id:
        raise NetworkError(
            f"{settings.genesis_file} is for chain id {chain_id} but CHAIN_ID is "
            f"{settings.chain_id}; run 'pilotchain init --force' to regenerate it "
            "(and './scripts/down --wipe' to drop the old chain)."
        )
