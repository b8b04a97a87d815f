"""The deployed Settlement's source, verified in the Blockscout explorer.

Auditors read trades in Blockscout; without verification it shows bytecode, not
``recordTrades`` and ``TradeSettled``. ``pilotchain explorer verify`` (Compose runs it once
after ``deploy``, as the ``verify-contract`` service) submits what the deployment was built
from to Blockscout's API v2 (checked against Blockscout 9.0.2's router and
``VerificationController.verification_via_standard_input``):

``POST /api/v2/smart-contracts/{address}/verification/via/standard-input``, multipart:
``compiler_version`` (``v0.8.x+commit.…``, as solc names itself), ``contract_name``,
``license_type``, ``autodetect_constructor_args=false`` with ``constructor_args`` (the hex
after the creation bytecode in the deployment transaction), and one JSON file in ``files[0]``:
the standard JSON input the contract was compiled from (``build/contracts/
Settlement.standard-input.json``). Blockscout answers at once and verifies in the background
(through its smart-contract-verifier service), so the step then polls
``GET /api/v2/smart-contracts/{address}`` until ``is_verified``.

Idempotent: a contract Blockscout already reports verified is left alone. Blockscout must
first have indexed the deployment (``GET /api/v2/addresses/{address}`` says ``is_contract``);
the step waits for that. Every failure is one sentence (ExplorerError).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from web3 import Web3

from pilotchain.chain import read
from pilotchain.contract import CONTRACT_NAME, Deployment
from pilotchain.errors import PilotChainError

LICENSE_TYPE = "mit"  # contracts/Settlement.sol's SPDX-License-Identifier
POLL_SECONDS = 3.0


class ExplorerError(PilotChainError):
    """The explorer could not verify the contract; the message says why."""


@dataclass(frozen=True)
class VerificationRequest:
    """What is posted: the form fields and the standard JSON input as a file."""

    url: str
    fields: dict[str, str]
    standard_input: bytes

    def files(self) -> dict[str, tuple[str, bytes, str]]:
        return {"files[0]": (f"{CONTRACT_NAME}.standard-input.json", self.standard_input,
                             "application/json")}


def verification_request(api_url: str, address: str, build_dir: Path,
                         constructor_args: str) -> VerificationRequest:
    """The request for ``address`` from the build the deployment was made with."""
    build = _json(build_dir / f"{CONTRACT_NAME}.build.json")
    source = build.get("source")
    version = build.get("compiler_version")
    if not isinstance(source, str) or not isinstance(version, str):
        raise ExplorerError(f"{build_dir / f'{CONTRACT_NAME}.build.json'} names no source or "
                            "compiler version; compile again with `pilotchain deploy`.")
    input_path = build_dir / f"{CONTRACT_NAME}.standard-input.json"
    try:
        standard_input = input_path.read_bytes()
    except OSError as error:
        raise ExplorerError(f"Cannot read {input_path} ({error.strerror}); compile and deploy "
                            "first (`pilotchain deploy`).") from None
    return VerificationRequest(
        url=f"{api_url.rstrip('/')}/api/v2/smart-contracts/{address}/verification/via/"
            "standard-input",
        fields={"compiler_version": f"v{version}",
                "contract_name": f"{source}:{CONTRACT_NAME}",
                "license_type": LICENSE_TYPE,
                "autodetect_constructor_args": "false",
                "constructor_args": constructor_args},
        standard_input=standard_input)


def constructor_args(w3: Web3, url: str, deployment: Deployment, build_dir: Path) -> str:
    """The ABI-encoded constructor arguments of the deployment, as hex without 0x: what its
    transaction's input has after this build's creation bytecode."""
    transaction = read(url, "Reading the deployment transaction",
                       lambda: w3.eth.get_transaction(deployment.transaction_hash))  # type: ignore[arg-type]
    data = bytes(transaction["input"]).hex()
    try:
        creation = (build_dir / f"{CONTRACT_NAME}.bin").read_text().strip().removeprefix("0x")
    except OSError as error:
        raise ExplorerError(f"Cannot read the creation code in {build_dir} ({error.strerror}); "
                            "compile and deploy first (`pilotchain deploy`).") from None
    if not data.startswith(creation):
        raise ExplorerError(f"The Settlement at {deployment.address} was not deployed from this "
                            f"build (its creation code differs from {build_dir}); the explorer "
                            "could not match the source.")
    return data[len(creation):]


def verify(api_url: str, request: VerificationRequest, address: str, *, timeout: float,
           progress: Callable[[str], None] = lambda _: None,
           session: requests.Session | None = None) -> str:
    """Verify ``address`` unless the explorer already has; returns what happened."""
    http = session or requests.Session()
    base = api_url.rstrip("/")
    deadline = time.monotonic() + timeout
    contract = f"{base}/api/v2/smart-contracts/{address}"
    _until(lambda: _get(http, f"{base}/api/v2/addresses/{address}").get("is_contract"),
           deadline, f"the explorer at {base} to index the Settlement at {address}")
    if _get(http, contract).get("is_verified"):
        return f"The Settlement at {address} is verified in the explorer already."
    progress(f"submitting the standard JSON input ({request.fields['compiler_version']})")
    try:
        answer = http.post(request.url, data=request.fields, files=request.files(), timeout=60)
    except requests.RequestException as error:
        raise ExplorerError(f"The explorer at {base} could not be reached ({error}).") from None
    if answer.status_code != 200:
        raise ExplorerError(f"The explorer refused the verification of {address} "
                            f"({answer.status_code}): {_message(answer)}")
    _until(lambda: _get(http, contract).get("is_verified"), deadline,
           f"the explorer to verify the Settlement at {address} (its smart-contract-verifier "
           "must reach binaries.soliditylang.org to fetch the compiler)")
    return f"Verified the Settlement at {address} in the explorer."


def _until(condition: Callable[[], Any], deadline: float, what: str) -> None:
    last: Exception | None = None
    while True:
        try:
            if condition():
                return
        except ExplorerError as error:
            last = error
        if time.monotonic() >= deadline:
            hint = f" (last answer: {last})" if last else ""
            raise ExplorerError(f"Timed out waiting for {what}{hint}.")
        time.sleep(POLL_SECONDS)  # the explorer indexes and verifies in the background


def _get(http: requests.Session, url: str) -> Mapping[str, Any]:
    try:
        answer = http.get(url, timeout=30)
    except requests.RequestException as error:
        raise ExplorerError(f"{url} could not be reached ({error}).") from None
    if answer.status_code == 404:
        return {}
    if answer.status_code != 200:
        raise ExplorerError(f"{url} answered {answer.status_code}: {_message(answer)}")
    try:
        body = answer.json()
    except ValueError:
        raise ExplorerError(f"{url} answered with something other than JSON.") from None
    return body if isinstance(body, dict) else {}


def _message(answer: requests.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.text[:200]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("errors") or body)[:300]
    return str(body)[:300]


def _json(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ExplorerError(f"Cannot read {path} ({error}); compile and deploy first "
                            "(`pilotchain deploy`).") from None
    if not isinstance(body, dict):
        raise ExplorerError(f"{path} is not a build record.")
    return body
