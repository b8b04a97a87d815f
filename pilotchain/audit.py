"""``pilotchain audit``: the books recomputed from the chain's events alone, then compared.

An auditor trusts neither the bridge nor the contract's arithmetic: every TradeSettled log of
the Settlement contract is read back, each trade id must appear once and be the one the
contract says it recorded in that block, the BatchRecorded counts must add up to the trades,
and every participant's bill is recomputed in Python (:func:`pilotchain.trades.compute_bills`)
and compared with ``billOf`` on chain. Money receivable must equal money payable across all
bills. Every difference becomes a :class:`Finding`; none means the books hold.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.abi import function_signature_to_4byte_selector
from web3 import Web3
from web3.types import FilterParams, LogReceipt

from pilotchain.chain import batch_call, read
from pilotchain.contract import Deployment
from pilotchain.trades import (
    BATCH_RECORDED_TOPIC,
    TRADE_SETTLED_TOPIC,
    Bill,
    TradeRecord,
    compute_bills,
    decode_trade_settled,
    uuid_to_bytes32,
)

_BILL_OF = function_signature_to_4byte_selector("billOf(bytes32)")
_RECORDED_IN = function_signature_to_4byte_selector("recordedIn(bytes32)")
# Blocks per eth_getLogs request and eth_calls per JSON-RPC batch: small enough for any node.
LOG_PAGE_BLOCKS = 5_000
CALLS_PER_BATCH = 500


@dataclass(frozen=True)
class Finding:
    """One difference between the events and the contract's state."""

    kind: str
    detail: str


@dataclass
class AuditReport:
    contract: str
    from_block: int
    to_block: int
    trades: int = 0
    participants: int = 0
    batches: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def audit(w3: Web3, url: str, deployment: Deployment, *, to_block: int | None = None,
          progress: Callable[[str], None] = lambda _: None) -> AuditReport:
    """Audit ``deployment`` from its deployment block to ``to_block`` (default: the head).

    The contract's state is read at ``to_block`` too, so a chain that moves on meanwhile
    does not show up as a difference.
    """
    head = to_block if to_block is not None else read(url, "Reading the head",
                                                      lambda: w3.eth.block_number)
    report = AuditReport(deployment.address, deployment.block_number, head)
    trades: list[tuple[TradeRecord, int]] = []
    recorded_by_batches = 0
    for logs in _logs(w3, url, deployment.address, deployment.block_number, head):
        for log in logs:
            topic = bytes(log["topics"][0])
            if topic == TRADE_SETTLED_TOPIC:
                trades.append((decode_trade_settled(log), int(log["blockNumber"])))
            elif topic == BATCH_RECORDED_TOPIC:
                report.batches += 1
                recorded_by_batches += int.from_bytes(bytes(log["data"])[:32], "big")
        progress(f"read {len(trades)} trades up to block {head}")
    report.trades = len(trades)
    _check_once(trades, report)
    if recorded_by_batches != len(trades):
        report.findings.append(Finding(
            "batch counts", f"BatchRecorded events count {recorded_by_batches} recorded trades, "
            f"but there are {len(trades)} TradeSettled events."))
    _check_blocks(w3, url, deployment.address, trades, head, report)
    expected = compute_bills(record for record, _ in trades)
    report.participants = len(expected)
    on_chain = _check_bills(w3, url, deployment.address, expected, head, report)
    _check_balance(on_chain, report)
    return report


def _logs(w3: Web3, url: str, address: str, first: int, last: int
          ) -> Iterator[Sequence[LogReceipt]]:
    """The contract's logs, page by page of LOG_PAGE_BLOCKS blocks."""
    start = first
    while start <= last:
        end = min(start + LOG_PAGE_BLOCKS - 1, last)
        query: FilterParams = {"address": Web3.to_checksum_address(address),
                               "fromBlock": start, "toBlock": end}
        yield _get_logs(w3, url, query, f"Reading the logs of blocks {start}-{end}")
        start = end + 1


def _get_logs(w3: Web3, url: str, query: FilterParams, action: str) -> Sequence[LogReceipt]:
    return read(url, action, lambda: w3.eth.get_logs(query))


def _check_once(trades: Sequence[tuple[TradeRecord, int]], report: AuditReport) -> None:
    counts = Counter(record.trade_id for record, _ in trades)
    for trade_id, count in sorted(counts.items(), key=lambda item: str(item[0])):
        if count > 1:
            report.findings.append(Finding(
                "duplicate trade", f"Trade {trade_id} was settled {count} times."))


def _check_blocks(w3: Web3, url: str, contract: str, trades: Sequence[tuple[TradeRecord, int]],
                  head: int, report: AuditReport) -> None:
    """Each trade's log must sit in the block the contract says recorded it."""
    calls = [("eth_call", [{"to": contract, "data": "0x" + (_RECORDED_IN + uuid_to_bytes32(
        record.trade_id)).hex()}, hex(head)]) for record, _ in trades]
    answers = _batched(w3, url, "Reading recordedIn of each trade", calls)
    for (record, block), answer in zip(trades, answers, strict=True):
        recorded_in = int(answer, 16)
        if recorded_in != block:
            report.findings.append(Finding(
                "record block", f"Trade {record.trade_id} was logged in block {block}, but the "
                f"contract says it recorded it in block {recorded_in}."))


def _check_bills(w3: Web3, url: str, contract: str, expected: dict[uuid.UUID, Bill], head: int,
                 report: AuditReport) -> dict[uuid.UUID, Bill]:
    """Each participant's ``billOf`` against the events; returns the bills on chain."""
    participants = sorted(expected, key=str)
    calls = [("eth_call", [{"to": contract, "data": "0x" + (_BILL_OF + uuid_to_bytes32(
        participant)).hex()}, hex(head)]) for participant in participants]
    answers = _batched(w3, url, "Reading billOf of each participant", calls)
    bills = {}
    for participant, answer in zip(participants, answers, strict=True):
        on_chain = bills[participant] = Bill(*abi_decode(["uint256"] * 4,
                                                          bytes.fromhex(answer[2:])))
        if on_chain != expected[participant]:
            report.findings.append(Finding(
                "bill", f"Participant {participant}: the events give {expected[participant]}, "
                f"billOf gives {on_chain}."))
    return bills


def _check_balance(bills: dict[uuid.UUID, Bill], report: AuditReport) -> None:
    """Across the bills on chain, every cent receivable must be payable by someone."""
    receivable = sum(bill.money_receivable for bill in bills.values())
    payable = sum(bill.money_payable for bill in bills.values())
    if receivable != payable:
        report.findings.append(Finding(
            "books", f"On chain, money receivable ({receivable}) differs from money payable "
            f"({payable})."))


def _batched(w3: Web3, url: str, action: str, calls: Sequence[tuple[str, Sequence[Any]]]
             ) -> list[Any]:
    answers: list[Any] = []
    for start in range(0, len(calls), CALLS_PER_BATCH):
        answers += batch_call(w3, url, action, calls[start:start + CALLS_PER_BATCH])
    return answers
