"""The bridge's exceptions: one root, messages built where raised, caught at the edge."""

from __future__ import annotations

from pilotchain.errors import PilotChainError


class BridgeError(PilotChainError):
    """The bridge cannot go on; the message says what is wrong and what to do."""


class BridgeConfigError(BridgeError):
    """A bridge setting, the key or the deployment record cannot be used."""


class RecorderRoleMissing(BridgeError):
    """The bridge account may not record trades in the Settlement contract."""


class BatchReverted(BridgeError):
    """A batch transaction reverted for a reason the bridge cannot repair by itself."""
