"""Compile, deploy and load PilotChain's Settlement contract.

Compilation goes through ``solcx.compile_standard`` with a native solc when one of the
version pinned in ``package.json`` is installed (by py-solc-x or on PATH), and otherwise
with the npm solc-js compiler through ``scripts/lib/solc-js``; both are the same compiler,
so ABI and bytecode are identical. Artefacts under ``build/contracts/`` are generated,
never edited, and reused while the compiler input (sources and settings) is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import solcx
import solcx.install
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from packaging.version import Version
from solcx.exceptions import SolcError, SolcNotInstalled
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import (
    ContractLogicError,
    TransactionIndexingInProgress,
    TransactionNotFound,
    Web3Exception,
    Web3RPCError,
)
from web3.types import TxReceipt

from pilotchain.chain import NONCE_ERRORS, Sender, rpc_message, wait_for, wait_for_receipt
from pilotchain.errors import ChainError, PilotChainError
from pilotchain.settings import PROJECT_ROOT

CONTRACT_NAME = "Settlement"
SOURCE_UNIT = "contracts/Settlement.sol"
DEFAULT_BUILD_DIR = PROJECT_ROOT / "build" / "contracts"
# The solc-js stand-in for a native solc, relative to the project root.
SOLC_JS_WRAPPER = Path("scripts/lib/solc-js")
EVM_VERSION = "london"  # the chain is Clique (geth 1.13): no PUSH0, so nothing newer
# The contract is deployed once and called for every batch: optimise for calls.
OPTIMIZER_RUNS = 10_000
# geth's pool refuses larger transactions ("oversized data").
MAX_TRANSACTION_BYTES = 128 * 1024
# geth 1.13 (eth/handler.go txMaxBroadcastSize) sends a transaction up to this size whole to
# its peers; a bigger one it only announces, and a peer asks for it 500 ms later at best.
BROADCAST_TRANSACTION_BYTES = 4096
# recordTrades calldata: selector and array head, then ten 32-byte words per trade.
_CALLDATA_HEAD_BYTES = 4 + 32 + 32
CALLDATA_BYTES_PER_TRADE = 10 * 32
# A signed type-2 transaction adds about 120 bytes to its calldata; keep a margin for
# large nonces, fees and gas values.
_TRANSACTION_ENVELOPE_BYTES = 300
ZERO_ADDRESS = Web3.to_checksum_address("0x" + "00" * 20)
# EIP-170: the largest runtime code a contract may have.
MAX_CODE_BYTES = 24_576

_IMPORT = re.compile(r"""^\s*import\s+(?:[^"';]*?\s+from\s+)?["']([^"']+)["']\s*;""", re.M)
_OUTPUTS = ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "metadata"]


class ContractError(PilotChainError):
    """The Settlement contract could not be compiled, deployed or loaded."""


class CompilerNotFound(ContractError):
    """No Solidity compiler of the pinned version is available."""


class CompilationFailed(ContractError):
    """The compiler rejected the sources or gave unusable output."""


class ArtefactsMissing(ContractError):
    """Build artefacts are absent or damaged."""


class DeploymentFailed(ContractError):
    """The deployment transaction was refused, reverted or never mined."""


class DeploymentReverted(DeploymentFailed):
    """The deployment transaction was mined and failed."""


class DeploymentRecordError(ContractError):
    """A deployment record file is missing, malformed or for another chain."""


@dataclass(frozen=True)
class CompiledContract:
    """The compiler's output for Settlement, as written under the build directory."""

    abi: list[dict[str, Any]]
    bytecode: str
    runtime_bytecode: str
    compiler_version: str
    input_hash: str
    standard_input: dict[str, Any]
    abi_path: Path


@dataclass(frozen=True)
class Deployment:
    """Where a Settlement contract lives and how to talk to it."""

    address: ChecksumAddress
    chain_id: int
    block_number: int
    transaction_hash: str
    abi_path: Path

    def load_abi(self) -> list[dict[str, Any]]:
        """The ABI the record points at."""
        return load_abi_file(self.abi_path)


def load_abi_file(path: Path) -> list[dict[str, Any]]:
    """An ABI file as written by :func:`compile_settlement`."""
    abi: list[dict[str, Any]] = _read_json(path, ArtefactsMissing, "ABI file")
    return abi


# --- compiler input ----------------------------------------------------------------------


def pinned_solc_version(project_root: Path = PROJECT_ROOT) -> str:
    """The solc version ``package.json`` pins (the one every compile must use)."""
    manifest = _read_json(project_root / "package.json", CompilerNotFound, "package.json")
    version = manifest.get("dependencies", {}).get("solc")
    if not isinstance(version, str) or not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise CompilerNotFound(
            f"package.json in {project_root} must pin an exact solc version, not {version!r}."
        )
    return version


def standard_input(project_root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """Self-contained standard-json input: every imported source embedded, london, optimised.

    Embedding the sources makes the input usable as is for explorer verification.
    """
    return {
        "language": "Solidity",
        "sources": {
            name: {"content": content}
            for name, content in sorted(_collect_sources(project_root).items())
        },
        "settings": {
            "evmVersion": EVM_VERSION,
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "outputSelection": {SOURCE_UNIT: {CONTRACT_NAME: list(_OUTPUTS)}},
        },
    }


def _collect_sources(project_root: Path) -> dict[str, str]:
    """Settlement.sol and everything it imports, keyed by source unit name."""
    sources: dict[str, str] = {}
    pending = [SOURCE_UNIT]
    while pending:
        unit = pending.pop()
        if unit in sources:
            continue
        sources[unit] = _read_source(project_root, unit)
        for imported in _IMPORT.findall(sources[unit]):
            pending.append(_resolve_import(unit, imported))
    return sources


def _resolve_import(importer: str, path: str) -> str:
    if path.startswith(("./", "../")):
        return posixpath.normpath(posixpath.join(posixpath.dirname(importer), path))
    return path


def _read_source(project_root: Path, unit: str) -> str:
    """A source unit from the project, or from node_modules for package imports."""
    for candidate in (project_root / unit, project_root / "node_modules" / unit):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    hint = " Run `npm ci` in the project root." if not unit.startswith("contracts/") else ""
    raise CompilationFailed(f"The Solidity source {unit} was not found.{hint}")


def input_hash(std_input: dict[str, Any], solc_version: str) -> str:
    """Key of the artefact cache: the compiler input and the compiler version."""
    canonical = json.dumps([solc_version, std_input], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- choosing a compiler -----------------------------------------------------------------


def find_solc(version: str, project_root: Path = PROJECT_ROOT) -> Path:
    """A native solc of ``version`` if installed, else the solc-js wrapper."""
    native = _native_solc(version)
    if native is not None:
        return native
    wrapper = project_root / SOLC_JS_WRAPPER
    if (project_root / "node_modules" / "solc").is_dir() and shutil.which("node"):
        return wrapper
    raise CompilerNotFound(
        f"No Solidity compiler {version} is available. Run `npm ci` in {project_root} "
        f"(needs Node.js) to use solc-js, or install a native compiler with "
        f"`python -m solcx.install v{version}`."
    )


def _native_solc(version: str) -> Path | None:
    """A native solc of exactly ``version``: py-solc-x's install folder first, then PATH."""
    wanted = Version(version)
    try:
        if wanted in solcx.get_installed_solc_versions():
            return Path(solcx.install.get_executable(wanted))
    except (SolcNotInstalled, OSError):
        pass
    on_path = shutil.which("solc")
    if on_path and _binary_version(Path(on_path)) == wanted:
        return Path(on_path)
    return None


def _binary_version(binary: Path) -> Version | None:
    try:
        return solcx.wrapper.get_solc_version(binary)
    except (SolcError, OSError, subprocess.SubprocessError, ValueError):
        return None


# --- compiling and artefacts -------------------------------------------------------------


def compile_settlement(
    build_dir: Path = DEFAULT_BUILD_DIR,
    *,
    solc_binary: Path | None = None,
    project_root: Path = PROJECT_ROOT,
    force: bool = False,
) -> CompiledContract:
    """Compile Settlement (or reuse artefacts of the same input) and write the artefacts.

    Artefacts: ``Settlement.abi.json``, ``Settlement.bin`` (creation bytecode),
    ``Settlement.standard-input.json`` (for explorer verification) and
    ``Settlement.build.json`` (compiler version, input hash, runtime bytecode).
    """
    version = pinned_solc_version(project_root)
    std_input = standard_input(project_root)
    key = input_hash(std_input, version)
    if not force:
        cached = _load_if_current(build_dir, key)
        if cached is not None:
            return cached
    binary = solc_binary or find_solc(version, project_root)
    output = _run_compiler(std_input, binary)
    compiled = _extract(output, std_input, key, build_dir)
    if not compiled.compiler_version.startswith(f"{version}+"):
        raise CompilationFailed(
            f"{binary} is solc {compiled.compiler_version}, but package.json pins {version}; "
            "run `npm ci` or pass the matching compiler."
        )
    _write_artefacts(compiled, build_dir)
    return compiled


def _run_compiler(std_input: dict[str, Any], binary: Path) -> dict[str, Any]:
    try:
        return solcx.compile_standard(std_input, solc_binary=binary)
    except SolcError as error:
        # error.message holds the compiler's own diagnostics; str(error) adds all of stdout.
        raise CompilationFailed(
            f"Compiling {SOURCE_UNIT} with {binary} failed:\n{error.message}"
        ) from None
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError) as error:
        raise CompilationFailed(f"The compiler {binary} could not be run: {error}") from None


def _extract(
    output: dict[str, Any], std_input: dict[str, Any], key: str, build_dir: Path
) -> CompiledContract:
    try:
        entry = output["contracts"][SOURCE_UNIT][CONTRACT_NAME]
        metadata = json.loads(entry["metadata"])
        return CompiledContract(
            abi=entry["abi"],
            bytecode="0x" + entry["evm"]["bytecode"]["object"],
            runtime_bytecode="0x" + entry["evm"]["deployedBytecode"]["object"],
            compiler_version=metadata["compiler"]["version"],
            input_hash=key,
            standard_input=std_input,
            abi_path=build_dir / f"{CONTRACT_NAME}.abi.json",
        )
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise CompilationFailed(f"The compiler output lacks {CONTRACT_NAME}: {error!r}.") from None


def _paths(build_dir: Path) -> dict[str, Path]:
    return {
        "abi": build_dir / f"{CONTRACT_NAME}.abi.json",
        "bin": build_dir / f"{CONTRACT_NAME}.bin",
        "input": build_dir / f"{CONTRACT_NAME}.standard-input.json",
        "build": build_dir / f"{CONTRACT_NAME}.build.json",
    }


def _write_artefacts(compiled: CompiledContract, build_dir: Path) -> None:
    """Write every artefact; build.json last, since its presence marks a complete set."""
    paths = _paths(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(paths["abi"], json.dumps(compiled.abi, indent=2) + "\n")
    _write_atomic(paths["bin"], compiled.bytecode + "\n")
    _write_atomic(paths["input"], json.dumps(compiled.standard_input, indent=2) + "\n")
    build = {
        "contract": CONTRACT_NAME,
        "source": SOURCE_UNIT,
        "compiler_version": compiled.compiler_version,
        "evm_version": EVM_VERSION,
        "optimizer_runs": OPTIMIZER_RUNS,
        "input_hash": compiled.input_hash,
        "runtime_bytecode": compiled.runtime_bytecode,
    }
    _write_atomic(paths["build"], json.dumps(build, indent=2) + "\n")


def load_artefacts(build_dir: Path = DEFAULT_BUILD_DIR) -> CompiledContract:
    """The compiled contract as last written to ``build_dir``."""
    paths = _paths(build_dir)
    build = _read_json(paths["build"], ArtefactsMissing, "build record")
    try:
        return CompiledContract(
            abi=_read_json(paths["abi"], ArtefactsMissing, "ABI file"),
            bytecode=paths["bin"].read_text(encoding="utf-8").strip(),
            runtime_bytecode=build["runtime_bytecode"],
            compiler_version=build["compiler_version"],
            input_hash=build["input_hash"],
            standard_input=_read_json(paths["input"], ArtefactsMissing, "standard-json input"),
            abi_path=paths["abi"],
        )
    except (KeyError, OSError) as error:
        raise ArtefactsMissing(
            f"The artefacts in {build_dir} are incomplete ({error}); compile again."
        ) from None


def _load_if_current(build_dir: Path, key: str) -> CompiledContract | None:
    if not _paths(build_dir)["build"].is_file():
        return None
    try:
        compiled = load_artefacts(build_dir)
    except ArtefactsMissing:
        return None
    return compiled if compiled.input_hash == key else None


# --- deploying ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedDeployment:
    """A signed deployment transaction, kept on disk from before it is sent until its
    contract is recorded, so a deploy that dies awaiting it completes it on its next run
    instead of deploying a second contract. Nothing in it is secret: the chain shows it."""

    chain_id: int
    sender: str
    nonce: int
    transaction_hash: str
    raw_transaction: str


def sign_deployment(w3: Web3, operator: LocalAccount, recorder: str, *,
                    reader: str | None = None,
                    compiled: CompiledContract | None = None) -> SignedDeployment:
    """Sign, without sending, the deployment of Settlement with the operator as admin,
    ``recorder`` holding the recorder role and ``reader`` (if given) the role that submits
    meter readings. All are granted in the constructor, so a deployment is never left
    without its recorder."""
    for role, address in (("recorder", recorder), ("reader", reader)):
        if address is not None and not Web3.is_address(address):
            raise DeploymentFailed(f"The {role} {address!r} is not an Ethereum address.")
    compiled = compiled or compile_settlement()
    factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
    constructor = factory.constructor(
        operator.address,
        Web3.to_checksum_address(recorder),
        Web3.to_checksum_address(reader) if reader else ZERO_ADDRESS,
    )
    sender = Sender(w3, operator)
    try:
        nonce = sender.resync_nonce()
        signed = sender.sign({"data": constructor.data_in_transaction}, nonce)
    except ChainError as error:
        raise DeploymentFailed(f"Preparing the {CONTRACT_NAME} deployment from "
                               f"{operator.address} failed: {error}") from None
    return SignedDeployment(chain_id=sender.chain_id(), sender=operator.address, nonce=nonce,
                            transaction_hash=HexBytes(signed.hash).to_0x_hex(),
                            raw_transaction=HexBytes(signed.raw_transaction).to_0x_hex())


def complete_deployment(w3: Web3, signed: SignedDeployment, *,
                        compiled: CompiledContract | None = None,
                        timeout: float = 120.0) -> Deployment | None:
    """Send ``signed`` (again: a node that has it already is fine), await it and return the
    deployment; None if it can never be mined, its nonce having gone to another transaction
    of the operator's."""
    compiled = compiled or compile_settlement()
    tx_hash = HexBytes(signed.transaction_hash)
    try:
        used = w3.eth.get_transaction_count(Web3.to_checksum_address(signed.sender), "latest")
        if used > signed.nonce:
            # Mined already: this transaction, or another with its nonce (then it has none).
            def mined() -> tuple[TxReceipt | None] | None:
                try:
                    return (w3.eth.get_transaction_receipt(tx_hash),)
                except TransactionNotFound:
                    return (None,)
                except TransactionIndexingInProgress:
                    return None

            (found,) = wait_for(mined, timeout=timeout,
                                what=f"the node to index transaction {tx_hash.to_0x_hex()}")
            if found is None:
                return None
            receipt = found
        else:
            try:
                w3.eth.send_raw_transaction(HexBytes(signed.raw_transaction))
            except Web3RPCError as error:
                # Known already, or mined since the nonce was read: its receipt says.
                if not any(marker in rpc_message(error) for marker in NONCE_ERRORS):
                    raise DeploymentFailed(
                        f"The node refused the {CONTRACT_NAME} deployment: "
                        f"{rpc_message(error)}.") from None
            receipt = wait_for_receipt(w3, tx_hash, timeout=timeout)
    except ChainError as error:
        raise DeploymentFailed(f"Deploying {CONTRACT_NAME} from {signed.sender} failed: "
                               f"{error}") from None
    except (Web3Exception, OSError, ValueError) as error:
        raise DeploymentFailed(f"Deploying {CONTRACT_NAME} from {signed.sender} failed: "
                               f"the node did not answer ({error}).") from None
    address = receipt.get("contractAddress")
    if receipt["status"] != 1 or not address:
        raise DeploymentReverted(
            f"The deployment transaction {tx_hash.to_0x_hex()} reverted "
            f"(gas used {receipt['gasUsed']})."
        )
    return Deployment(
        address=Web3.to_checksum_address(address),
        chain_id=signed.chain_id,
        block_number=receipt["blockNumber"],
        transaction_hash=tx_hash.to_0x_hex(),
        abi_path=compiled.abi_path,
    )


def deploy_settlement(
    w3: Web3,
    operator: LocalAccount,
    recorder: str,
    *,
    reader: str | None = None,
    compiled: CompiledContract | None = None,
    timeout: float = 120.0,
    on_signed: Callable[[SignedDeployment], None] | None = None,
) -> Deployment:
    """Deploy Settlement (see :func:`sign_deployment`) and await it; ``on_signed`` gets the
    signed transaction before it is sent (to keep it until the contract is recorded)."""
    compiled = compiled or compile_settlement()
    signed = sign_deployment(w3, operator, recorder, reader=reader, compiled=compiled)
    if on_signed is not None:
        on_signed(signed)
    deployment = complete_deployment(w3, signed, compiled=compiled, timeout=timeout)
    if deployment is None:
        raise DeploymentFailed(f"Another transaction of {operator.address} took nonce "
                               f"{signed.nonce} of the {CONTRACT_NAME} deployment.")
    return deployment


def save_signed_deployment(signed: SignedDeployment, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, json.dumps({"contract": CONTRACT_NAME, **asdict(signed)}, indent=2)
                  + "\n")


def load_signed_deployment(path: Path) -> SignedDeployment | None:
    """The deployment in flight recorded at ``path``, or None if there is none."""
    if not path.is_file():
        return None
    record = _read_json(path, DeploymentRecordError, "deployment in flight")
    try:
        return SignedDeployment(chain_id=int(record["chain_id"]), sender=str(record["sender"]),
                                nonce=int(record["nonce"]),
                                transaction_hash=str(record["transaction_hash"]),
                                raw_transaction=str(record["raw_transaction"]))
    except (KeyError, TypeError, ValueError) as problem:
        raise DeploymentRecordError(
            f"The deployment in flight {path} is damaged ({problem!r}); delete it if no "
            f"deploy is running, and deploy again.") from None


def settlement_contract(w3: Web3, deployment: Deployment) -> Contract:
    """A web3 contract object for a deployment."""
    return w3.eth.contract(address=deployment.address, abi=deployment.load_abi())


def is_deployed(w3: Web3, deployment: Deployment) -> bool:
    """Whether the record's contract exists on the chain ``w3`` is connected to."""
    if w3.eth.chain_id != deployment.chain_id:
        return False
    return len(w3.eth.get_code(deployment.address)) > 0


def max_batch_size(transaction_limit: int = MAX_TRANSACTION_BYTES) -> int:
    """How many trades one recordTrades transaction can carry under geth's size limit."""
    room = transaction_limit - _TRANSACTION_ENVELOPE_BYTES - _CALLDATA_HEAD_BYTES
    return max(room // CALLDATA_BYTES_PER_TRADE, 0)


def broadcast_batch_size() -> int:
    """How many trades one signed recordTrades transaction can carry and still be sent
    whole to the signers rather than announced (11)."""
    return max_batch_size(BROADCAST_TRANSACTION_BYTES)


# --- deployment records ------------------------------------------------------------------


def save_deployment(deployment: Deployment, path: Path) -> None:
    """Write the record as JSON; the ABI path is stored relative to the record's folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "contract": CONTRACT_NAME,
        "address": deployment.address,
        "chain_id": deployment.chain_id,
        "block_number": deployment.block_number,
        "transaction_hash": deployment.transaction_hash,
        "abi_path": _relative_to(deployment.abi_path, path.parent),
    }
    _write_atomic(path, json.dumps(record, indent=2) + "\n")


def load_deployment(path: Path, *, chain_id: int | None = None) -> Deployment:
    """Read a deployment record; with ``chain_id``, refuse a record of another chain."""
    record = _read_json(path, DeploymentRecordError, "deployment record")
    try:
        deployment = Deployment(
            address=Web3.to_checksum_address(record["address"]),
            chain_id=int(record["chain_id"]),
            block_number=int(record["block_number"]),
            transaction_hash=str(record["transaction_hash"]),
            abi_path=(path.parent / record["abi_path"]).resolve(),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise DeploymentRecordError(
            f"The deployment record {path} is malformed ({error!r}); deploy again."
        ) from None
    if chain_id is not None and deployment.chain_id != chain_id:
        raise DeploymentRecordError(
            f"The deployment record {path} is for chain {deployment.chain_id}, "
            f"not chain {chain_id}; deploy again for this chain."
        )
    return deployment


# --- reverts -----------------------------------------------------------------------------


def revert_data(error: ContractLogicError) -> bytes:
    """The revert data a ContractLogicError carries (some providers wrap it in a dict)."""
    data: Any = error.data
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str):
        return bytes.fromhex(data.removeprefix("0x"))
    return bytes(data or b"")


# --- files -------------------------------------------------------------------------------


def _read_json(path: Path, error: type[ContractError], what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"The {what} {path} does not exist.") from None
    except (OSError, json.JSONDecodeError) as problem:
        raise error(f"The {what} {path} cannot be read: {problem}.") from None


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` in one step, so a concurrent reader never sees half a file."""
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as handle:
        handle.write(text)
    # Temporary files are private (0600); artefacts are read by other users' containers.
    os.chmod(handle.name, 0o644)
    os.replace(handle.name, path)


def _relative_to(path: Path, folder: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), folder.resolve())
    except ValueError:  # another drive on Windows
        return str(path.resolve())
