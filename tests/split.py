"""Splitting a local network in two and healing it, for tests of reorganisations: each node
over its IPC socket (where geth serves every namespace: admin, miner, clique), frozen with
SIGSTOP at will. Imported by the test modules that need it (not a fixture module)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hexbytes import HexBytes
from web3 import Web3
from web3.types import RPCEndpoint

from pilotchain.chain import connect, wait_for
from runner.localnet import LocalNetwork

__all__ = ["HEAL_BLOCKS", "HEAL_WHY", "Nodes", "wait"]


class Nodes:
    """The nodes of one network over their IPC sockets, where geth serves every namespace
    (admin, miner, clique): what the test uses to split and heal the network."""

    def __init__(self, net: LocalNetwork) -> None:
        self.net = net
        self._w3: dict[str, Web3] = {}
        self._frozen: dict[str, int] = {}

    def w3(self, name: str) -> Web3:
        if name not in self._w3:
            self._w3[name] = connect(str(self.net.ipc_path(name)))
        return self._w3[name]

    def call(self, name: str, method: str, *params: Any) -> Any:
        reply = self.w3(name).provider.make_request(RPCEndpoint(method), list(params))
        assert "error" not in reply, f"{method} on {name}: {reply['error']}"
        return reply["result"]

    def peers(self, name: str) -> set[str]:
        return {peer["id"] for peer in self.call(name, "admin_peers")}

    def signer(self, name: str, number: int) -> str:
        block = self.w3(name).eth.get_block(number)
        return str(self.call(name, "clique_getSigner", block["hash"].to_0x_hex())).lower()

    def receipt(self, name: str, tx_hash: HexBytes) -> Any:
        return self.call(name, "eth_getTransactionReceipt", tx_hash.to_0x_hex())

    def total_difficulty(self, name: str, block: str = "latest") -> int:
        """The weight of ``name``'s chain up to ``block``: Clique picks the heavier chain."""
        return int(self.call(name, "eth_getBlockByNumber", block, False)["totalDifficulty"], 16)

    def freeze(self, names: list[str]) -> None:
        """SIGSTOP ``names``: their sockets stay open, but they neither read nor answer, so
        nobody completes a connection to them (a peer's dial times out in its handshake)."""
        for name in names:
            pid = self.net.process(name).pid
            assert pid, f"{name} is not running"
            os.kill(pid, signal.SIGSTOP)
            self._frozen[name] = pid

    def thaw(self, names: list[str]) -> None:
        for name in names:
            pid = self._frozen.pop(name, None)
            if pid is not None:
                os.kill(pid, signal.SIGCONT)

    @contextmanager
    def freezing(self) -> Iterator[Nodes]:
        """``freeze`` and ``thaw`` at will inside; everything frozen is thawed at the end,
        also on failure."""
        try:
            yield self
        finally:
            self.thaw(list(self._frozen))


def wait(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """A wait on a node's own answer (its pool, its peers): not chain progress."""
    return wait_for(condition, timeout=timeout, what=what, interval=0.1)


# geth dials a node again only 35 s after it last dialed it (p2p's dialHistoryExpiration), and
# the split makes every node dial the other side in vain: healed, the RPC node may reach side
# B's chain only then, as many blocks of side B later, and imports it within a few more.
HEAL_BLOCKS = 35 + 25
HEAL_WHY = ("geth redials a node 35 s after its last dial (p2p dialHistoryExpiration), 35 "
            "blocks of 1 s; then it imports side B's few blocks")


