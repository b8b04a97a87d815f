"""The waits measured by the chain (``pilotchain.chain.wait_for_blocks`` and friends), on a
scripted chain: they fail once the chain went the allowed blocks (or reached the allowed
time) without what was awaited, naming it and why that deadline; they count from the last
move of the awaited work when given one; they call a chain that stops sealing halted; and a
condition that holds when the deadline is reached is never missed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from web3 import Web3

from pilotchain import chain as chain_module
from pilotchain.chain import ChainUnreachable, wait_for_blocks, wait_until_chain_time
from pilotchain.errors import ChainError


class ScriptedChain:
    """A node whose head moves one block (``period`` seconds of chain time) per read, up to
    ``stop_at``; stands in for ``w3`` (only ``eth.get_block("latest")`` is read)."""

    def __init__(self, start: int = 10, stop_at: int | None = None, period: int = 2,
                 unreachable: bool = False) -> None:
        self.number, self.stop_at, self.period = start, stop_at, period
        self.unreachable = unreachable
        self.eth = self

    def get_block(self, which: str) -> dict[str, Any]:
        assert which == "latest"
        if self.unreachable:
            raise ChainUnreachable("Reading the head failed: cannot reach the node.")
        block = {"number": self.number, "timestamp": 1_000 + self.number * self.period}
        if self.stop_at is None or self.number < self.stop_at:
            self.number += 1
        return block

    @property
    def w3(self) -> Web3:
        return cast(Web3, self)


def never() -> None:
    return None


def test_fails_after_the_allowed_blocks_naming_what_and_why() -> None:
    node = ScriptedChain(start=10)
    with pytest.raises(ChainError) as failed:
        wait_for_blocks(never, w3=node.w3, blocks=3, period=1, what="the thing",
                        why="it comes in the next block", interval=0)
    assert str(failed.value) == (
        "Timed out waiting for the thing: the chain went 3 blocks past block 10 without it "
        "(3 allowed: it comes in the next block).")


def test_a_condition_that_holds_at_the_deadline_is_seen() -> None:
    node = ScriptedChain(start=10)
    # True from the read that finds the head at 13, the deadline: seen, not a timeout.
    assert wait_for_blocks(lambda: node.number > 13 and "done", w3=node.w3, blocks=3,
                           period=1, what="the thing", why="-", interval=0) == "done"


def test_the_blocks_count_from_the_last_move_of_the_awaited_work() -> None:
    node = ScriptedChain(start=0)
    # The work moves on every read until block 20, then stands still.
    with pytest.raises(ChainError, match=r"went 5 blocks past block 20, nothing having moved "
                                         r"since without it \(5 allowed: slow\)"):
        wait_for_blocks(never, w3=node.w3, blocks=5, period=1, what="the work", why="slow",
                        progress=lambda: min(node.number, 21), interval=0)


@pytest.fixture
def quick_halt(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(chain_module, "HALT_FLOOR", 0.2)
    monkeypatch.setattr(chain_module, "HALT_PERIODS", 0)
    yield


def test_a_chain_that_stops_sealing_is_called_halted(quick_halt: None) -> None:
    node = ScriptedChain(start=10, stop_at=12)
    with pytest.raises(ChainError, match=r"^Timed out waiting for the thing: the chain stayed at "
                                         r"block 12 \(2 blocks after the wait began\) for 0 s, 0 "
                                         r"periods of 1 s, so it has halted\.$"):
        wait_for_blocks(never, w3=node.w3, blocks=100, period=1, what="the thing", why="-",
                        interval=0.01)


def test_a_node_that_never_answers_fails_with_its_error(quick_halt: None) -> None:
    node = ScriptedChain(unreachable=True)
    with pytest.raises(ChainError, match=r"the chain answered no head for 0 s.*so it has halted "
                                         r"\(last error: Reading the head failed: cannot reach "
                                         r"the node\.\)"):
        wait_for_blocks(never, w3=node.w3, blocks=1, period=1, what="the thing", why="-",
                        interval=0.01)


def test_chain_time_deadline() -> None:
    node = ScriptedChain(start=10, period=2)  # block n is timed 1000 + 2n
    with pytest.raises(ChainError) as failed:
        wait_until_chain_time(never, w3=node.w3, until=1_030, period=2, what="slot closed",
                              why="its end and close delay", interval=0)
    assert str(failed.value) == (
        "Timed out waiting for slot closed: the chain's head reached time 1030 (block 15, 5 "
        "blocks after the wait began) without it (the deadline: its end and close delay).")
    node = ScriptedChain(start=10, period=2)
    assert wait_until_chain_time(lambda: node.number > 15, w3=node.w3, until=1_030, period=2,
                                 what="slot closed", why="-", interval=0)
