"""Metering on the real local Clique network: a meter's signed readings close a slot."""

from __future__ import annotations

import uuid

import pytest
from bridge_fixtures import send, send_calls
from eth_account import Account
from web3.logs import DISCARD

from pilotchain.chain import Sender, connect
from pilotchain.contract import compile_settlement, deploy_settlement, settlement_contract
from pilotchain.metering import WH, Domain, MeterReading, Refusal, meter_id, sign_reading
from pilotchain.trades import TradeRecord, uuid_to_bytes32
from runner.localnet import LocalNetwork

pytestmark = pytest.mark.chain

SLOT = 900
CT = 10**18


def test_a_signed_reading_closes_a_slot_on_the_real_chain(chain: LocalNetwork) -> None:
    w3 = connect(chain.rpc_url)
    operator = chain.keys.role("operator").unlock()
    bridge = chain.keys.role("bridge").unlock()
    # The operator stands in for the future ingest account: it holds gas on this network.
    deployment = deploy_settlement(w3, operator, bridge.address, reader=operator.address,
                                   compiled=compile_settlement())
    contract = settlement_contract(w3, deployment)
    admin, recorder = Sender(w3, operator), Sender(w3, bridge)

    house, market, buyer = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    meter_key = Account.create()
    meter = meter_id(uuid.uuid4())
    pid = uuid_to_bytes32(house)
    send_calls(w3, admin, contract,
               ("registerMeter", meter, meter_key.address, pid, pid),
               ("setCloseDelay", 0),
               ("setRates", 0, 40 * CT, 30 * CT, 0))

    head = w3.eth.get_block("latest")["timestamp"]
    slot = head // SLOT * SLOT - 2 * SLOT  # ended, and its deadline (no delay) passed
    sale = TradeRecord(uuid.uuid4(), market, slot, house, buyer, house, buyer, 10 * WH, CT, 0)
    send(w3, recorder, contract, "recordTrades", [sale.as_contract_tuple()])

    domain = Domain(w3.eth.chain_id, contract.address)
    readings = [sign_reading(MeterReading(meter, slot, 1000, 500), meter_key, domain),
                sign_reading(MeterReading(meter, slot + SLOT, 1000, 507), meter_key, domain)]
    forged = sign_reading(MeterReading(meter, slot + 2 * SLOT, 1000, 600), Account.create(),
                          domain)
    # The closing after the readings, both the operator's: one batch.
    receipt, closing = send_calls(
        w3, admin, contract,
        ("submitReadings", [r.as_contract_tuple() for r in [*readings, forged]]),
        ("closeSlots", [pid], [slot]))
    events = contract.events
    submitted = events.ReadingsSubmitted().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert (submitted["recorded"], submitted["duplicates"], submitted["refused"]) == (2, 0, 1)
    refusal = contract.events.ReadingRefused().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert (refusal["index"], refusal["reason"]) == (2, Refusal.BAD_SIGNATURE)

    balanced = contract.events.SlotBalanced().process_receipt(closing, errors=DISCARD)[0]["args"]
    assert (balanced["sold"], balanced["exportEnergy"]) == (10 * WH, 7 * WH)
    assert balanced["shortfallCharge"] == 3 * WH * 40
    assert contract.functions.balancingOf(pid).call() == [3 * WH * 40, 0]
    assert contract.functions.slotOf(pid, slot).call()[0] == 1  # Balanced
