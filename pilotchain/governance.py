"""Clique signer governance: propose, discard and inspect votes on every validator.

A Clique vote counts only when a majority of current signers have cast it, each in a
block it seals, so a proposal is made on every validator at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils.address import is_address, to_checksum_address
from web3.types import RPCEndpoint

from pilotchain.chain import call, connect
from pilotchain.errors import PilotChainError


class GovernanceError(PilotChainError):
    """A vote could not be cast or read."""


@dataclass(frozen=True)
class VoteState:
    """What one validator reports: the current signers and its own pending proposals."""

    validator: str
    signers: list[str]
    proposals: dict[str, bool]


def checked_address(address: str) -> str:
    if not is_address(address):
        raise GovernanceError(f"{address!r} is not an Ethereum address (0x and 40 hex digits).")
    return to_checksum_address(address)


def _rpc(endpoint: str, method: str, params: list[object], action: str) -> Any:
    w3 = connect(endpoint)
    return call(endpoint, action,
                lambda: w3.manager.request_blocking(RPCEndpoint(method), params))


def propose(endpoints: dict[str, str], address: str, authorize: bool) -> None:
    """Ask every validator (name -> IPC path or URL) to vote ``address`` in or out."""
    target = checked_address(address)
    verb = "add" if authorize else "remove"
    for name, endpoint in endpoints.items():
        _rpc(endpoint, "clique_propose", [target, authorize], f"Proposing on {name} to {verb} "
             f"{target}")


def discard(endpoints: dict[str, str], address: str) -> None:
    """Withdraw the pending proposal about ``address`` on every validator."""
    target = checked_address(address)
    for name, endpoint in endpoints.items():
        _rpc(endpoint, "clique_discard", [target], f"Discarding the vote on {target} on {name}")


def vote_state(endpoints: dict[str, str]) -> list[VoteState]:
    """Each validator's view of the signer set and its pending proposals."""
    states = []
    for name, endpoint in endpoints.items():
        signers = _rpc(endpoint, "clique_getSigners", [], f"Reading the signers from {name}")
        proposals = _rpc(endpoint, "clique_proposals", [], f"Reading the proposals of {name}")
        states.append(VoteState(
            name,
            [to_checksum_address(s) for s in signers],
            {to_checksum_address(a): bool(v) for a, v in dict(proposals).items()},
        ))
    return states
