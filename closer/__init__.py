"""PilotChain's slot closer: closes every due metered slot on Settlement, continuously."""

from __future__ import annotations
