"""What can go wrong with a claim, as sentences a user can act on.

Every message is built where the error is raised; the HTTP edge (``faucet.http``) maps
each class to its status code and never shows anything else (no node error, no traceback).
"""

from __future__ import annotations

from pilotchain.errors import PilotChainError


class FaucetError(PilotChainError):
    """The root of every error the faucet answers with."""


class InvalidRequest(FaucetError):
    """The request itself is wrong (400): not JSON, a missing field, a bad address."""


class InvalidAddress(InvalidRequest):
    """The wallet address is not a usable Ethereum address."""


class RateLimited(FaucetError):
    """The address or the client's IP has used up its quota (429)."""

    def __init__(self, sentence: str, retry_after: int) -> None:
        super().__init__(sentence)
        self.retry_after = retry_after


class FaucetUnavailable(FaucetError):
    """The faucet cannot send right now (503); nothing was sent, no quota was used."""


class FaucetEmpty(FaucetUnavailable):
    """The faucet's account cannot pay for another claim."""


class ChainUnavailable(FaucetUnavailable):
    """The chain is unreachable, refused the transaction or is not the configured one."""


class StoreUnavailable(FaucetUnavailable):
    """Redis, where the claim limits are shared, is unreachable."""
