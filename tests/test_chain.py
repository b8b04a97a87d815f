"""The pilot chain on a real three-signer Clique network of geth 1.13.15 processes."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import pytest
import requests
from eth_account import Account
from web3 import HTTPProvider, Web3
from web3.types import RPCEndpoint, RPCResponse
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from pilotchain import governance
from pilotchain.chain import (
    ChainUnreachable,
    NodeRefused,
    Sender,
    batch_call,
    connect,
    wait_for,
    wait_for_receipt,
)
from pilotchain.errors import ChainError, NetworkError
from pilotchain.genesis import read_genesis
from runner.localnet import RPC_NODE, LocalNetwork
from runner.ports import free_port

pytestmark = pytest.mark.chain

# A proposal counts once its signer seals a block, which each signer does at least once in
# every few blocks; a majority of votes takes a handful. Twenty leaves room for a busy machine's
# out-of-turn races without waiting long on a vote that never lands.
VOTE_BLOCKS = 20
VOTE_WHY = "a vote rides on its signer's next block; a majority of signers seals within a few"
# A signer of three or four may seal once every two or three blocks; twenty blocks without one
# means it has stopped sealing.
TURN_BLOCKS = 20
TURN_WHY = "Clique lets every signer of four or fewer seal at least once in every few blocks"


def signer_of(w3: Web3, number: int) -> str:
    return Web3.to_checksum_address(w3.manager.request_blocking("clique_getSigner", [hex(number)]))


def signers(w3: Web3, number: int | None = None) -> set[str]:
    """The signer set after block ``number`` (the head by default)."""
    params = [] if number is None else [hex(number)]
    current = w3.manager.request_blocking("clique_getSigners", params)
    return {Web3.to_checksum_address(address) for address in current}


def validator_addresses(net: LocalNetwork) -> set[str]:
    return {role.address for role in net.keys.validators()}


def assert_sealing_halts(net: LocalNetwork, periods: int = 6) -> int:
    """Sealing halts: after at most two more blocks the head stays put for ``periods``.

    The two allow for a block already on its way to the RPC node and for the one block the
    last signer may still seal (Clique only stops it once it signed one of the last two).
    """
    for _ in range(3):
        head = net.block_number()
        try:
            net.wait_for_block(head + 1, timeout=periods * net.settings.block_period)
        except ChainError as error:
            assert "Timed out" in str(error)
            return head
    raise AssertionError(f"Blocks kept coming with one signer of three: head {head}.")


def no_rewinds(net: LocalNetwork) -> None:
    for name, log in net.iter_logs():
        text = log.read_text()
        for marker in ("Head state missing", "Rewinding blockchain", "Rewound"):
            assert marker not in text, f"{name} rewound its chain: {marker!r} in {log}"


def test_three_signers_seal_in_turn_and_rpc_follows(chain: LocalNetwork) -> None:
    w3 = connect(chain.rpc_url)
    head = chain.wait_for_block(33)
    sealers = [signer_of(w3, n) for n in range(head - 32, head + 1)]
    assert set(sealers) == validator_addresses(chain)
    # In turn: with three signers nobody seals twice within two consecutive blocks.
    assert all(a != b for a, b in itertools.pairwise(sealers))
    assert signers(w3) == validator_addresses(chain)
    # Every validator's head and the RPC node's agree within a block or two.
    validator_heads = {name: chain.block_number(name) for name in chain.running()
                       if name.startswith("validator")}
    rpc_head = chain.block_number()
    assert all(abs(h - rpc_head) <= 2 for h in validator_heads.values()), validator_heads


def test_eip1559_transfer_is_mined_and_chain_id_matches_genesis(chain: LocalNetwork) -> None:
    w3 = connect(chain.rpc_url)
    genesis = read_genesis(chain.settings.genesis_file)
    assert w3.eth.chain_id == genesis["config"]["chainId"] == chain.settings.chain_id
    faucet = chain.keys.role("faucet").unlock()
    recipient = Account.create().address
    sender = Sender(w3, faucet, url=chain.rpc_url)
    tx_hash = sender.send({"to": recipient, "value": 12345, "gas": 21000})
    receipt = chain.receipt(tx_hash)
    assert receipt["status"] == 1
    assert w3.eth.get_transaction(tx_hash)["type"] == 2
    assert w3.eth.get_balance(recipient) == 12345


class StillIndexing(HTTPProvider):
    """The RPC node as it answers for a while after it starts: it cannot tell a receipt
    (geth's error, word for word) for the first ``times`` asks."""

    def __init__(self, url: str, times: int) -> None:
        super().__init__(url)
        self.left = times

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        if method == "eth_getTransactionReceipt" and self.left > 0:
            self.left -= 1
            return {"jsonrpc": "2.0", "id": 1, "error": {
                "code": -32000, "message": "transaction indexing is in progress"}}
        return super().make_request(method, params)


def test_a_receipt_is_awaited_while_the_node_still_indexes(chain: LocalNetwork) -> None:
    """A fresh node's "transaction indexing is in progress" means "not yet", not a failure:
    `pilotchain deploy` took it for one, and Compose's restart deployed again."""
    faucet = chain.keys.role("faucet").unlock()
    sender = Sender(connect(chain.rpc_url), faucet, url=chain.rpc_url)
    tx_hash = sender.send({"to": Account.create().address, "value": 1, "gas": 21000})
    provider = StillIndexing(chain.rpc_url, times=3)
    w3 = connect(chain.rpc_url)
    w3.provider = provider
    receipt = wait_for_receipt(w3, tx_hash, timeout=60)
    assert receipt["status"] == 1
    assert provider.left == 0


def test_nonce_is_recovered_after_another_client_used_it(
        chain: LocalNetwork, caplog: pytest.LogCaptureFixture) -> None:
    w3 = connect(chain.rpc_url)
    operator = chain.keys.role("operator").unlock()
    first, second = Sender(w3, operator), Sender(w3, operator)
    target = Account.create().address
    # Each transfer is mined before the next send, so every sender reads a settled node.
    hashes = [first.send({"to": target, "value": 1, "gas": 21000})]
    chain.receipt(hashes[-1])
    # `second` reads the account's nonce from the node: the one `first` holds for its next.
    hashes.append(second.send({"to": target, "value": 2, "gas": 21000}))
    chain.receipt(hashes[-1])
    # `first` still believes that nonce is free: the node says "nonce too low" and the
    # sender re-reads the pending nonce instead of failing.
    with caplog.at_level(logging.WARNING, logger="pilotchain.chain"):
        hashes.append(first.send({"to": target, "value": 3, "gas": 21000}))
    assert "nonce too low" in caplog.text
    for tx_hash in hashes:
        assert chain.receipt(tx_hash)["status"] == 1
    nonces = [w3.eth.get_transaction(tx_hash)["nonce"] for tx_hash in hashes]
    assert nonces == list(range(nonces[0], nonces[0] + 3))
    assert w3.eth.get_balance(target) == 6


def test_json_rpc_batch_answers_in_request_order_and_fails_in_sentences(
        chain: LocalNetwork) -> None:
    w3 = connect(chain.rpc_url)
    numbers = list(range(w3.eth.block_number, -1, -1))[:5]  # newest first
    blocks = batch_call(w3, chain.rpc_url, "Reading blocks",
                        [("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
    assert [int(block["number"], 16) for block in blocks] == numbers
    with pytest.raises(NodeRefused) as refused:
        batch_call(w3, chain.rpc_url, "Reading receipts",
                   [("eth_blockNumber", []), ("eth_getTransactionReceipt", ["0x12"])])
    assert str(refused.value).startswith(
        f"Reading receipts failed: the node at {chain.rpc_url} said: ")
    nowhere = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ChainUnreachable, match=f"Reading receipts failed: cannot reach the "
                                               f"node at {nowhere}"):
        batch_call(connect(nowhere), nowhere, "Reading receipts", [("eth_blockNumber", [])])


@pytest.mark.parametrize("method", [
    "admin_nodeInfo", "admin_peers", "personal_listAccounts", "miner_start",
    "debug_traceBlockByNumber",
])
def test_rpc_node_refuses_privileged_namespaces(chain: LocalNetwork, method: str) -> None:
    answer = requests.post(chain.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                "params": []}, timeout=10).json()
    assert "result" not in answer
    assert "does not exist/is not available" in answer["error"]["message"]


# --- what web pages may do with the RPC node (issue 19) ----------------------------------

CHAIN_ID_CALL = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}


def preflight(url: str, origin: str) -> requests.Response:
    """What a browser asks before a page's cross-origin JSON POST."""
    return requests.options(url, timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})


def websocket_status(url: str, origin: str | None) -> int:
    """The HTTP status of a WebSocket handshake from a page of ``origin`` (101: open)."""
    try:
        with ws_connect(url, origin=origin, open_timeout=10) as socket:  # type: ignore[arg-type]
            socket.send('{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}')
            assert '"result"' in str(socket.recv(timeout=10))
            return 101
    except InvalidStatus as refused:
        return int(refused.response.status_code)


def test_rpc_node_serves_no_web_page_and_no_foreign_host_name(chain: LocalNetwork) -> None:
    """A page a participant happens to open cannot use the node through their browser: no
    CORS answer for its origin, its WebSocket refused, and a name of its own pointed at the
    node (DNS rebinding) answered 403. Wallets, tools and services send no Origin and use
    localhost or the address: they are served."""
    evil = "https://evil.example"
    assert "Access-Control-Allow-Origin" not in preflight(chain.rpc_url, evil).headers
    sent = requests.post(chain.rpc_url, json=CHAIN_ID_CALL, headers={"Origin": evil},
                         timeout=10)
    assert "Access-Control-Allow-Origin" not in sent.headers
    assert websocket_status(chain.ws_url, evil) == 403
    # geth's default for no origins would let every page on localhost in.
    assert websocket_status(chain.ws_url, "http://localhost:3000") == 403
    assert websocket_status(chain.ws_url, None) == 101

    rebound = requests.post(chain.rpc_url, json=CHAIN_ID_CALL, timeout=10,
                            headers={"Host": f"evil.example:{chain.ports.http}"})
    assert (rebound.status_code, rebound.text.strip()) == (403, "invalid host specified")
    for host in (f"localhost:{chain.ports.http}", f"127.0.0.1:{chain.ports.http}"):
        answer = requests.post(chain.rpc_url, json=CHAIN_ID_CALL, timeout=10,
                               headers={"Host": host})
        assert answer.json()["result"] == hex(chain.settings.chain_id), host


def test_rpc_node_serves_the_origins_and_names_configured(make_network) -> None:
    """The stack's own pages (runner.stack.page_origins) and RPC_CORS_ORIGINS are let in,
    exactly: same scheme, host and port; RPC_VHOSTS adds host names."""
    page = "http://localhost:9200"
    net = make_network(rpc_cors_origins=("https://app.pilot.test",),
                       rpc_vhosts=("rpc.pilot.test",))
    net.stop_node(RPC_NODE)
    net.page_origins = (page,)
    net.start_node(RPC_NODE)
    net.wait_for_block(net.block_number(), timeout=90)
    for origin in (page, "https://app.pilot.test"):
        answer = preflight(net.rpc_url, origin)
        assert answer.headers.get("Access-Control-Allow-Origin") == origin
        sent = requests.post(net.rpc_url, json=CHAIN_ID_CALL, headers={"Origin": origin},
                             timeout=10)
        assert sent.headers.get("Access-Control-Allow-Origin") == origin
        assert websocket_status(net.ws_url, origin) == 101
    for other in ("http://localhost:9201", "https://localhost:9200", "http://app.pilot.test",
                  "https://evil.example"):
        assert "Access-Control-Allow-Origin" not in preflight(net.rpc_url, other).headers
        assert websocket_status(net.ws_url, other) == 403, other
    named = requests.post(net.rpc_url, json=CHAIN_ID_CALL, timeout=10,
                          headers={"Host": f"rpc.pilot.test:{net.ports.http}"})
    assert named.json()["result"] == hex(net.settings.chain_id)
    assert requests.post(net.rpc_url, json=CHAIN_ID_CALL, timeout=10,
                         headers={"Host": "evil.example"}).status_code == 403


def listening_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN state owned by ``pid`` (read from /proc, no extra tools)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A = LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_validators_serve_no_open_json_rpc(chain: LocalNetwork) -> None:
    for name in ("validator1", "validator2", "validator3"):
        pid = chain.process(name).pid
        cmdline = open(f"/proc/{pid}/cmdline").read().split("\0")
        assert "--http" not in cmdline and "--ws" not in cmdline
        ports = listening_ports(pid)
        assert ports, f"{name} listens on nothing at all?"
        for port in ports:
            # geth's only HTTP listener on a validator is the JWT-guarded engine port.
            try:
                reply = requests.post(f"http://127.0.0.1:{port}", timeout=3,
                                      json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})
            except requests.RequestException:
                continue
            assert reply.status_code in (401, 403) or "result" not in reply.text, (name, port)


def test_sealing_survives_one_validator_down_halts_with_two_and_resumes(make_network) -> None:
    net = make_network()
    net.wait_for_block(3)
    assert net.stop_node("validator3")
    head = net.block_number()
    net.wait_for_block(head + 4)
    assert net.stop_node("validator2")
    halted_at = assert_sealing_halts(net)
    net.start_node("validator2")
    net.start_node("validator3")
    net.wait_for_block(halted_at + 4)
    for name in ("validator1", "validator2", "validator3"):
        net.wait_for_block(halted_at + 3, name=name)
    no_rewinds(net)


def test_validators_that_seal_late_take_the_first_ones_block(make_network) -> None:
    """The busy machine's start: one validator is told to seal, and seals block 1, before
    the others are. They take its block, and the chain goes on from it.

    When a validator took sent blocks only once it sealed itself, the other two dropped
    block 1 and, told to seal a moment later, sealed their own; each then "signed recently"
    on a chain of its own and saw no peer ahead of it, and the chain halted at block 1 for
    good (CI, 2026-12-07).
    """
    net = make_network(start=False)
    names = [role.name for role in net.keys.validators()]
    for name in net.node_names():
        net.start_node(name, seal=name not in names)
    first, late = names[0], names[1:]
    net.take_blocks(names)
    net.seal([first])
    net.wait_for_block(1, name=first, timeout=60)
    for name in late:
        net.wait_for_block(1, name=name, timeout=30)
    net.seal(late)
    # One chain: all agree on block 4 once they are past it (at the head, two may briefly
    # hold different blocks of a height sealed in and out of turn, as on any Clique chain).
    hashes: dict[str, str] = {}

    def one_chain() -> bool:
        for name in names:
            if net.block_number(name) < 6:
                return False
            hashes[name] = net.web3(name).eth.get_block(4)["hash"].hex()
        return len(set(hashes.values())) == 1

    try:
        wait_for(one_chain, timeout=60, what="the validators to agree on block 4")
    except ChainError as error:
        raise AssertionError(f"{error} Their block 4: {hashes}") from None


def test_governance_votes_a_fourth_signer_in_and_out(make_network) -> None:
    net = make_network()
    w3 = connect(net.rpc_url)
    newcomer = net.keys.create_account("validator4", fast=True)
    net.start_node("validator4")
    endpoints = {name: str(net.ipc_path(name)) for name in ("validator1", "validator2",
                                                            "validator3")}
    governance.propose(endpoints, newcomer.address, True)
    assert all(s.proposals == {newcomer.address: True} for s in governance.vote_state(endpoints))
    net.wait_for_blocks(lambda: newcomer.address in signers(w3), blocks=VOTE_BLOCKS,
                        what="validator4 voted in", why=VOTE_WHY)
    voted_in = w3.eth.block_number
    net.wait_for_blocks(lambda: any(signer_of(w3, n) == newcomer.address
                                    for n in range(voted_in, w3.eth.block_number + 1)),
                        blocks=TURN_BLOCKS, what="validator4 to seal a block", why=TURN_WHY)

    endpoints["validator4"] = str(net.ipc_path("validator4"))
    governance.propose(endpoints, newcomer.address, False)
    net.wait_for_blocks(lambda: newcomer.address not in signers(w3), blocks=VOTE_BLOCKS,
                        what="validator4 voted out", why=VOTE_WHY)
    governance.discard(endpoints, newcomer.address)
    assert all(not s.proposals for s in governance.vote_state(endpoints))
    remaining = validator_addresses(net) - {newcomer.address}

    # Judged on the chain as it ends up: a short reorg may move the block that drops it.
    def sealed_since_removal() -> list[str]:
        head = w3.eth.block_number
        removed_at = next(n for n in range(voted_in, head + 1)
                          if newcomer.address not in signers(w3, n))
        return [signer_of(w3, n) for n in range(removed_at + 1, head + 1)]

    net.wait_for_block(w3.eth.block_number + 8)
    net.wait_for_blocks(lambda: remaining <= set(sealed_since_removal()), blocks=TURN_BLOCKS,
                        what="each of the three remaining signers to seal after validator4 left",
                        why=TURN_WHY)
    assert newcomer.address not in sealed_since_removal()
    assert RPC_NODE in net.running()


def test_a_validator_whose_password_does_not_open_its_key_is_named(make_network) -> None:
    net = make_network(start=False)
    role = net.keys.role("validator2")
    role.password_file.write_text("not the password\n")
    with pytest.raises(NetworkError) as refused:
        net.start()
    assert str(refused.value) == (
        f"validator2 could not unlock its signer key with the password in its directory of "
        f"{net.keys.directory}: could not decrypt key with given password.")
