"""The ingest's exceptions: one root, messages built where raised, caught at the edge."""

from __future__ import annotations

from pilotchain.errors import PilotChainError


class IngestError(PilotChainError):
    """The ingest cannot go on; the message says what is wrong and what to do."""


class IngestConfigError(IngestError):
    """An ingest setting, the key or the deployment record cannot be used."""
