"""``pilotchain audit``: the books recomputed from the chain's events alone, then compared.

An auditor trusts neither the bridge nor the contract's arithmetic: every TradeSettled log of
the Settlement contract is read back, each trade id must appear once and be the one the
contract says it recorded in that block, the BatchRecorded counts must add up to the trades,
and every participant's bill is recomputed in Python (:func:`pilotchain.trades.compute_bills`)
and compared with ``billOf`` on chain.

The metering is replayed from the same logs in log order (:mod:`pilotchain.metering_audit`):
each closed slot is balanced again in Python from the meters, readings, rates and boundary
trades before it and compared field by field with its SlotBalanced or SlotUnmetered event;
then ``balancingOf`` of every metered participant and of the grid operator must equal the
recomputed charges and credits, and ``statementOf`` of every closed period the bills' change
in recording order. Money receivable (trades and balancing credits) must equal money payable
(trades and balancing charges) across all bills, the operator's included. Every difference
becomes a :class:`Finding`; none means the books hold.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from web3 import Web3

from pilotchain.chain import contract_logs, read
from pilotchain.contract import Deployment
from pilotchain.events import BATCH_RECORDED, TRADE_SETTLED, decode_as, event_of
from pilotchain.metering import OPERATOR, BalancingTotals, balancing_totals
from pilotchain.metering_audit import (
    BalancingReplay,
    Finding,
    Statement,
    decode_metering_log,
)
from pilotchain.settlement import Settlement
from pilotchain.trades import (
    Bill,
    TradeRecord,
    compute_bills,
    decode_trade_settled,
    uuid_to_bytes32,
)

__all__ = ["AuditReport", "Finding", "audit"]


@dataclass
class AuditReport:
    contract: str
    from_block: int
    to_block: int
    trades: int = 0
    participants: int = 0
    batches: int = 0
    meters: int = 0
    readings: int = 0
    slots_balanced: int = 0
    slots_unmetered: int = 0
    periods: int = 0
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
    replay = BalancingReplay()
    recorded_by_batches = 0
    for logs in contract_logs(w3, url, deployment.address, deployment.block_number, head):
        for log in logs:
            kind = event_of(log)
            if kind is TRADE_SETTLED:
                record = decode_trade_settled(log)
                trades.append((record, int(log["blockNumber"])))
                replay.apply(record)
            elif kind is BATCH_RECORDED:
                report.batches += 1
                recorded_by_batches += decode_as(BATCH_RECORDED, log).values["recorded"]
            elif (event := decode_metering_log(log)) is not None:
                replay.apply(event)
        progress(f"read {len(trades)} trades and {replay.readings} readings up to block {head}")
    replay.finish()
    report.trades = len(trades)
    report.meters, report.readings = len(replay.meters), replay.readings
    report.slots_balanced, report.slots_unmetered = replay.slots_balanced, replay.slots_unmetered
    report.periods = len(replay.period_bills)
    _check_once(trades, report)
    if recorded_by_batches != len(trades):
        report.findings.append(Finding(
            "batch counts", f"BatchRecorded events count {recorded_by_batches} recorded trades, "
            f"but there are {len(trades)} TradeSettled events."))
    contract = Settlement.at(w3, url, deployment)
    _check_blocks(contract, trades, head, report)
    expected = compute_bills(record for record, _ in trades)
    report.participants = len(expected)
    bills = _check_bills(contract, expected, head, report)
    report.findings += replay.findings
    balancing = _check_balancing(contract, replay, head, report)
    _check_balance(bills, balancing, report)
    _check_statements(contract, replay, head, report)
    return report


def _check_once(trades: Sequence[tuple[TradeRecord, int]], report: AuditReport) -> None:
    counts = Counter(record.trade_id for record, _ in trades)
    for trade_id, count in sorted(counts.items(), key=lambda item: str(item[0])):
        if count > 1:
            report.findings.append(Finding(
                "duplicate trade", f"Trade {trade_id} was settled {count} times."))


def _check_blocks(contract: Settlement, trades: Sequence[tuple[TradeRecord, int]],
                  head: int, report: AuditReport) -> None:
    """Each trade's log must sit in the block the contract says recorded it."""
    answers = contract.read_all([contract.abi.recorded_in(record.trade_id)
                                 for record, _ in trades],
                                "Reading recordedIn of each trade", block=head)
    for (record, block), recorded_in in zip(trades, answers, strict=True):
        if recorded_in != block:
            report.findings.append(Finding(
                "record block", f"Trade {record.trade_id} was logged in block {block}, but the "
                f"contract says it recorded it in block {recorded_in}."))


def _check_bills(contract: Settlement, expected: dict[uuid.UUID, Bill], head: int,
                 report: AuditReport) -> list[Bill]:
    """Each participant's ``billOf`` against the events, and the grid operator's, which no
    trade touches; returns the bills on chain."""
    parties = [uuid_to_bytes32(participant) for participant in sorted(expected, key=str)]
    wanted = [*(expected[participant] for participant in sorted(expected, key=str)), Bill()]
    bills = contract.read_all([contract.abi.bill_of(party) for party in [*parties, OPERATOR]],
                              "Reading billOf of each participant", block=head)
    for party, bill, on_chain in zip([*parties, OPERATOR], wanted, bills, strict=True):
        if on_chain != bill:
            report.findings.append(Finding(
                "bill", f"Participant {_name(party)}: the events give {bill}, billOf gives "
                f"{on_chain}."))
    return bills


def _check_balancing(contract: Settlement, replay: BalancingReplay, head: int,
                     report: AuditReport) -> list[BalancingTotals]:
    """``balancingOf`` of every metered participant and of the grid operator against the
    recomputed slots; returns the amounts on chain."""
    per_participant, operator = balancing_totals(replay.balances)
    metered = replay.metered()
    parties = [*(uuid_to_bytes32(participant) for participant in metered), OPERATOR]
    wanted = [*(per_participant.get(p, BalancingTotals()) for p in metered), operator]
    on_chain = contract.read_all([contract.abi.balancing_of(party) for party in parties],
                                 "Reading balancingOf of each metered participant", block=head)
    for party, totals, got in zip(parties, wanted, on_chain, strict=True):
        if got != totals:
            report.findings.append(Finding(
                "balancing", f"Participant {_name(party)}: the events give charges "
                f"{totals.charges} and credits {totals.credits}, balancingOf gives charges "
                f"{got.charges} and credits {got.credits}."))
    return on_chain


def _check_balance(bills: Sequence[Bill], balancing: Sequence[BalancingTotals],
                   report: AuditReport) -> None:
    """Across the bills on chain, the grid operator's included, every cent receivable must
    be payable by someone: trade money and balancing money alike."""
    trade_in = sum(bill.money_receivable for bill in bills)
    trade_out = sum(bill.money_payable for bill in bills)
    credits = sum(totals.credits for totals in balancing)
    charges = sum(totals.charges for totals in balancing)
    if trade_in + credits != trade_out + charges:
        report.findings.append(Finding(
            "books", f"On chain, money receivable ({trade_in + credits}: trades {trade_in}, "
            f"balancing credits {credits}) differs from money payable ({trade_out + charges}: "
            f"trades {trade_out}, balancing charges {charges}), the grid operator's included."))


def _check_statements(contract: Settlement, replay: BalancingReplay, head: int,
                      report: AuditReport) -> None:
    """``statementOf`` of every closed period and every party with a bill, against the bills'
    change between the period closings, in recording order."""
    parties = sorted(set(replay.bills) | {OPERATOR})
    keys = [(period, party) for period in range(1, len(replay.period_bills) + 1)
            for party in parties]
    answers = contract.read_all([contract.abi.statement_of(period, party)
                                 for period, party in keys],
                                "Reading statementOf of each period and participant", block=head)
    for (period, party), values in zip(keys, answers, strict=True):
        on_chain = Statement(*values)
        expected = replay.statement(period, party)
        if on_chain != expected:
            report.findings.append(Finding(
                "statement", f"Participant {_name(party)}, period {period}: the events give "
                f"{expected}, statementOf gives {on_chain}."))


def _name(party: bytes) -> str:
    """A participant's uuid, or the grid operator."""
    if party == OPERATOR:
        return "grid operator (OPERATOR)"
    return str(uuid.UUID(bytes=party[16:]))
