"""The catalogue of the Settlement contract's events (pilotchain.events) against the compiled
contract's ABI, and its one decoder on logs encoded from that ABI, not from the catalogue."""

from __future__ import annotations

import re
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from web3 import Web3

from pilotchain.contract import CompiledContract
from pilotchain.events import (
    BY_TOPIC,
    EVENTS,
    READING_RECORDED,
    InvalidLog,
    decode_log,
)

# Inherited from OpenZeppelin's AccessControl: role changes, not settlement.
NOT_CATALOGUED = {"RoleAdminChanged", "RoleGranted", "RoleRevoked"}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def abi_events(compiled: CompiledContract) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in compiled.abi if entry["type"] == "event"}


def test_every_event_matches_the_compiled_contract(compiled: CompiledContract) -> None:
    """Name, input names, types, their order and which are indexed; the topic is the
    keccak of the ABI's own signature."""
    abi = abi_events(compiled)
    for event in EVENTS:
        inputs = abi[event.name]["inputs"]
        assert [(snake(i["name"]), i["type"], i["indexed"]) for i in inputs] == \
            [(i.name, i.abi_type, i.indexed) for i in event.inputs], event.name
        signature = f"{event.name}({','.join(i['type'] for i in inputs)})"
        assert event.topic == Web3.keccak(text=signature), event.name


def test_every_event_of_the_contract_is_catalogued(compiled: CompiledContract) -> None:
    assert set(abi_events(compiled)) - NOT_CATALOGUED == {event.name for event in EVENTS}
    assert len(BY_TOPIC) == len(EVENTS)


def sample(abi_type: str, seed: int) -> Any:
    """A value of ``abi_type`` that uses its full width (so a wrong type cannot decode it)."""
    if abi_type == "address":
        return to_checksum_address(bytes([seed % 255 + 1]) * 20)
    if abi_type == "bytes32":
        return bytes([seed % 255 + 1]) * 32
    bits = int(abi_type.removeprefix("uint"))
    return 2**bits - 1 - seed


def log_from_abi(entry: dict[str, Any], values: list[Any]) -> dict[str, Any]:
    """A log as the node returns it (hex text), encoded from the ABI entry alone."""
    topics = [Web3.keccak(text=f"{entry['name']}({','.join(i['type'] for i in entry['inputs'])})")]
    data_types, data_values = [], []
    for item, value in zip(entry["inputs"], values, strict=True):
        if item["indexed"]:
            topics.append(abi_encode([item["type"]], [value]))
        else:
            data_types.append(item["type"])
            data_values.append(value)
    return {"topics": ["0x" + bytes(topic).hex() for topic in topics],
            "data": "0x" + abi_encode(data_types, data_values).hex(),
            "blockNumber": "0x2a", "logIndex": "0x3"}


def test_every_event_decodes_from_a_log_encoded_from_the_abi(
        compiled: CompiledContract) -> None:
    for name, entry in abi_events(compiled).items():
        if name in NOT_CATALOGUED:
            continue
        values = [sample(item["type"], seed) for seed, item in enumerate(entry["inputs"])]
        decoded = decode_log(log_from_abi(entry, values))
        assert decoded is not None and decoded.name == name
        assert decoded.values == {snake(item["name"]): value
                                  for item, value in zip(entry["inputs"], values, strict=True)}


def test_a_log_of_no_catalogued_event_is_none() -> None:
    assert decode_log({"topics": [b"\x11" * 32], "data": b""}) is None
    assert decode_log({"topics": [], "data": b""}) is None


def reading_log() -> dict[str, Any]:
    return {"topics": [READING_RECORDED.topic, b"\x01" * 32, (7).to_bytes(32, "big")],
            "data": abi_encode(["uint64", "uint64", "bytes32"], [5, 6, b"\x02" * 32]),
            "blockNumber": 42, "logIndex": 3}


@pytest.mark.parametrize(("spoil", "problem"), [
    (lambda log: log["topics"].pop(), "it has 1 indexed topics, the event 2"),
    (lambda log: log["topics"].append(b"\x00" * 32), "it has 3 indexed topics, the event 2"),
    (lambda log: log.update(data=log["data"][:-32]), ""),
    # A uint64 topic with bits above 64 set is no uint64.
    (lambda log: log["topics"].__setitem__(2, b"\x01" * 32), ""),
], ids=["topic missing", "topic too many", "short data", "topic out of range"])
def test_a_malformed_log_is_refused_with_where_it_is(spoil: Any, problem: str) -> None:
    log = reading_log()
    assert decode_log(log) is not None
    spoil(log)
    with pytest.raises(InvalidLog, match=re.escape(
            f"The ReadingRecorded log in block 42 (index 3) cannot be decoded: {problem}")):
        decode_log(log)

