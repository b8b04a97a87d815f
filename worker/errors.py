"""The worker's exceptions: one root, messages built where raised, caught at the edge.

A service's own errors descend from its own root (``BridgeError``, ``IngestError``); these are
what the shared machinery cannot get past, whichever service runs it.
"""

from __future__ import annotations

from pilotchain.errors import PilotChainError


class WorkerError(PilotChainError):
    """The worker cannot go on; the message says what is wrong and what to do."""


class WorkerConfigError(WorkerError):
    """A setting, the key, the deployment record or a port cannot be used."""


class WriterLocked(WorkerError):
    """Another process of the same service already writes this stream to the chain."""


class TargetChanged(WorkerError):
    """The stream was settled into another chain or contract before."""


class RoleMissing(WorkerError):
    """The service's account lacks the Settlement role its transactions need."""
