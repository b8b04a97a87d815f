"""The slot closer's exceptions: one root, messages built where raised, caught at the edge."""

from __future__ import annotations

from pilotchain.errors import PilotChainError


class CloserError(PilotChainError):
    """The slot closer cannot go on; the message says what is wrong and what to do."""


class CloserConfigError(CloserError):
    """A closer setting, its key or the deployment record cannot be used."""
