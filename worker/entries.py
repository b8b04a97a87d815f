"""Stream entries as the worker hands them to a codec, and the verdict on one that cannot go
on chain (a dead letter with its reason)."""

from __future__ import annotations

from dataclasses import dataclass

# An entry id and its fields as text; None for an entry deleted from the stream meanwhile.
Entry = tuple[str, dict[str, str] | None]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A stream entry that can never be settled, and why (a sentence for the operator)."""

    entry_id: str
    reason: str
    payload: str


def entry_time_ms(entry_id: str) -> int:
    """When Redis appended the entry: the millisecond part of its id."""
    return int(entry_id.split("-", 1)[0])
