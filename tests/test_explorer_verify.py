"""`pilotchain explorer verify`: the deployed Settlement's source submitted to Blockscout.

Blockscout cannot run here (its images come from a registry these machines do not reach),
so its API is played by a small HTTP server (a stand-in for that one external service) that
answers as Blockscout 9.0.2 does, field for field as its router and
``VerificationController.verification_via_standard_input`` read them: ``files`` (one JSON
file), ``compiler_version``, ``contract_name``, ``license_type``,
``autodetect_constructor_args`` and ``constructor_args``. The deployment, its transaction
and its build are real (a Settlement deployed on the real chain); the stand-in declares the
contract verified only if what arrives is what that deployment was built from: the standard
JSON input byte for byte, solc's own version name, and the constructor arguments the
contract was deployed with (admin, recorder, reader), encoded independently here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from bridge_fixtures import Deployed
from eth_abi.abi import encode as abi_encode
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from pilotchain.contract import ZERO_ADDRESS
from pilotchain.settings import PROJECT_ROOT
from runner.ports import free_port

STARTED = "Smart-contract verification started"  # Blockscout's answer, verbatim


@dataclass
class StandIn:
    """What the stand-in Blockscout knows and was sent."""

    address: str
    expected: dict[str, Any]
    unindexed_answers: int = 2  # it has not indexed the deployment yet the first times
    verified: bool = False
    posts: list[dict[str, Any]] = field(default_factory=list)


def blockscout(state: StandIn) -> Flask:
    app = Flask("blockscout-stand-in")

    @app.get("/api/v2/addresses/<address>")
    def address(address: str) -> Any:
        if address.lower() != state.address.lower() or state.unindexed_answers > 0:
            state.unindexed_answers -= 1
            return jsonify({"message": "Not found"}), 404
        return jsonify({"hash": state.address, "is_contract": True})

    @app.get("/api/v2/smart-contracts/<address>")
    def smart_contract(address: str) -> Any:
        return jsonify({"is_verified": state.verified})

    @app.post("/api/v2/smart-contracts/<address>/verification/via/standard-input")
    def standard_input(address: str) -> Any:
        # verification_via_standard_input matches on "files" and "compiler_version";
        # validate_params_standard_json_input wants exactly one JSON file among the files.
        form = request.form.to_dict()
        files = {name: upload for name, upload in request.files.items()}
        if "compiler_version" not in form or not files:
            return jsonify({"message": "Params missing"}), 422
        (upload,) = files.values()
        if not upload.filename.endswith(".json"):
            return jsonify({"message": "JSON file expected"}), 422
        received = {"address": address, **form, "file": upload.read()}
        state.posts.append(received)
        state.verified = all(received.get(key) == value
                             for key, value in state.expected.items())
        return jsonify({"message": STARTED})

    return app


@pytest.fixture
def stand_in(deployed: Deployed) -> Iterator[tuple[StandIn, str]]:
    keys = deployed.net.keys
    build = PROJECT_ROOT / "build" / "contracts"
    version = json.loads((build / "Settlement.build.json").read_text())["compiler_version"]
    args = abi_encode(["address", "address", "address"],
                      [keys.role("operator").address, keys.role("bridge").address,
                       ZERO_ADDRESS]).hex()
    state = StandIn(deployed.deployment.address, {
        "address": deployed.deployment.address,
        "compiler_version": f"v{version}",
        "contract_name": "contracts/Settlement.sol:Settlement",
        "license_type": "mit",
        "autodetect_constructor_args": "false",
        "constructor_args": args,
        "file": (build / "Settlement.standard-input.json").read_bytes(),
    })
    port = free_port()
    server = make_server("127.0.0.1", port, blockscout(state), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def run_verify(deployed: Deployed, explorer: str, timeout: float = 60
               ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RPC_URL": deployed.net.rpc_url,
           "CHAIN_ID": str(deployed.net.settings.chain_id),
           "DEPLOYMENT_FILE": str(deployed.record), "EXPLORER_URL": explorer}
    return subprocess.run([sys.executable, "-m", "runner.cli", "explorer", "verify",
                           "--timeout", str(timeout)], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_deployment_is_verified_once_with_what_it_was_built_from(
        deployed: Deployed, stand_in: tuple[StandIn, str]) -> None:
    state, url = stand_in
    first = run_verify(deployed, url)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.strip() == (f"Verified the Settlement at {deployed.deployment.address} "
                                    "in the explorer.")
    assert len(state.posts) == 1 and state.verified, {
        key: value for key, value in state.posts[0].items() if key != "file"}
    again = run_verify(deployed, url)  # idempotent: a verified contract is left alone
    assert again.returncode == 0, again.stderr
    assert "is verified in the explorer already" in again.stdout
    assert len(state.posts) == 1


def test_a_refused_or_unfinished_verification_is_one_sentence(
        deployed: Deployed, stand_in: tuple[StandIn, str]) -> None:
    state, url = stand_in
    state.expected["compiler_version"] = "v0.0.0"  # the stand-in never verifies it
    result = run_verify(deployed, url, timeout=8)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "pilotchain: Timed out waiting for the explorer to verify the Settlement at ")
    assert "Traceback" not in result.stderr
    unset = run_verify(deployed, "", timeout=5)
    assert unset.returncode == 1 and unset.stderr.strip() == (
        "pilotchain: No explorer to verify in: set EXPLORER_URL (where Blockscout's API "
        "answers) or give --explorer-url.")
    nowhere = run_verify(deployed, f"http://127.0.0.1:{free_port()}", timeout=5)
    assert nowhere.returncode == 1 and "Traceback" not in nowhere.stderr
    assert "could not be reached" in nowhere.stderr
