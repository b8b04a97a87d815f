"""The portal's exceptions: one root, messages built where raised, caught at the edge."""

from __future__ import annotations

from pilotchain.errors import PilotChainError


class PortalError(PilotChainError):
    """The portal cannot go on; the message says what is wrong and what to do."""


class PortalConfigError(PortalError):
    """A portal setting or the deployment record cannot be used."""


class DatabaseError(PortalError):
    """The index database cannot be opened, migrated or written."""


class WrongDatabase(DatabaseError):
    """The database indexes another contract or chain, or was made by a newer portal."""


class AnotherWriter(DatabaseError):
    """Another indexer moved the cursor of the same database meanwhile."""


class ReorgTooDeep(PortalError):
    """The chain replaced more indexed blocks than PORTAL_MAX_REORG_DEPTH allows."""


class ChainMoved(PortalError):
    """The chain changed between two reads of one page; the page is read again."""


class BlockTooLarge(PortalError):
    """One block holds more events than the node sends in one answer."""
