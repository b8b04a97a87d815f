"""What the portal reads live from the Settlement contract (who a wallet is, bills,
statements) and the calldata of the operator's transactions, which the operator's own wallet
signs in the browser: the portal never holds a key.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from web3 import Web3
from web3.exceptions import ContractLogicError

from pilotchain.chain import connect, read
from pilotchain.contract import ContractError, Deployment, load_deployment
from pilotchain.errors import ChainError, Phrase
from pilotchain.operator import AdminCall, OperatorError, check_call
from pilotchain.settlement import DEFAULT_ADMIN_ROLE, Read, Settlement
from pilotchain.trades import uuid_to_bytes32
from portal.errors import PortalConfigError, PortalError
from portal.events import id_text

_HEX_ID = re.compile(r"^0x[0-9a-f]{64}$")


class LedgerUnavailable(PortalError):
    """The chain cannot be asked right now; the page says so instead of a stale number."""


class TransactionRefused(PortalError):
    """The contract would refuse the operator's transaction; the sentence says why (400)."""


class BadParticipantId(PortalError):
    """A participant id that is neither a gsy-e uuid nor 0x and 64 hex digits."""


def id_bytes(participant: str) -> bytes:
    """A participant id as the portal shows it (see :func:`portal.events.id_text`) as bytes32."""
    text = participant.strip().lower()
    if _HEX_ID.match(text):
        return bytes.fromhex(text[2:])
    try:
        return uuid_to_bytes32(uuid.UUID(text))
    except ValueError:
        raise BadParticipantId("{participant!r} is not a participant id (a gsy-e uuid or 0x "
                               "and 64 hexadecimal digits).", participant=participant[:80]
                               ) from None


@dataclass(frozen=True)
class Identity:
    """What the contract says a wallet is."""

    participant: str | None
    is_operator: bool


def unreachable(action: Phrase) -> LedgerUnavailable:
    return LedgerUnavailable("{action} failed: the chain cannot be reached right now; try "
                             "again in a minute.", action=action)


class Ledger:
    """Reads of one deployment through the RPC node."""

    def __init__(self, rpc_url: str, deployment_file: Any, *, timeout: float) -> None:
        self.url = rpc_url
        try:
            self.deployment: Deployment = load_deployment(deployment_file)
        except ContractError as error:
            raise PortalConfigError(f"{error} The portal reads the contract its deployment "
                                    "record names (DEPLOYMENT_FILE).") from None
        self.w3: Web3 = connect(rpc_url, timeout=timeout, env_proxies=False)
        self.contract = Settlement.at(self.w3, rpc_url, self.deployment)

    def _read(self, action: Phrase, fn: Any) -> Any:
        try:
            return read(self.url, action, fn)
        except (ChainError, ContractLogicError):
            raise unreachable(action) from None

    def identity(self, wallet: str) -> Identity:
        """The participant linked to ``wallet`` and whether it is the contract's admin."""
        wallet = Web3.to_checksum_address(wallet)
        abi = self.contract.abi
        raw = self._read(Phrase("Looking up the wallet"),
                         lambda: self.contract.call(abi.participant_of(wallet)))
        admin = self._read(Phrase("Looking up the wallet's role"), lambda: self.contract.call(
            abi.has_role(DEFAULT_ADMIN_ROLE, wallet)))
        participant = None if not any(raw) else id_text(raw)
        return Identity(participant, bool(admin))

    def _calls(self, action: Phrase, calls: list[Read[Any]]) -> list[Any]:
        """Several view calls in one round trip to the node."""
        try:
            return self.contract.read_all(calls, action)
        except ChainError:
            raise unreachable(action) from None

    def bill(self, participant: str) -> dict[str, int]:
        """The running bill of trades and of balancing, as ``billOf`` and ``balancingOf``
        (asked together: one round trip)."""
        pid, abi = id_bytes(participant), self.contract.abi
        bill, balancing = self._calls(Phrase("Reading the bill"),
                                      [abi.bill_of(pid), abi.balancing_of(pid)])
        return {"energy_sold": bill.energy_sold, "energy_bought": bill.energy_bought,
                "money_receivable": bill.money_receivable,
                "money_payable": bill.money_payable, "balancing_charges": balancing.charges,
                "balancing_credits": balancing.credits,
                "net": (bill.money_receivable + balancing.credits - bill.money_payable
                        - balancing.charges)}

    def statements(self, participant: str) -> list[dict[str, Any]]:
        """Every closed period's statement of ``participant``, oldest first: the number of
        periods, then every period's end and statement in one round trip."""
        pid, abi = id_bytes(participant), self.contract.abi
        count = self._read(Phrase("Reading the periods"),
                           lambda: self.contract.call(abi.period_count()))
        answers = self._calls(Phrase("Reading the statements"), [
            call for period in range(1, count + 1)
            for call in (abi.period_end(period), abi.statement_of(period, pid))])
        found = []
        for period in range(1, count + 1):
            end, statement = answers[2 * period - 2], answers[2 * period - 1]
            sold, bought, receivable, payable, charges, credits, net, paid = statement
            found.append({"period": period, "end_slot": end, "energy_sold": sold,
                          "energy_bought": bought, "money_receivable": receivable,
                          "money_payable": payable, "balancing_charges": charges,
                          "balancing_credits": credits, "net": net, "paid": paid})
        return found

    # -- the operator's transactions, to be signed by the operator's wallet ----------------

    def prepare(self, admin_call: AdminCall, wallet: str) -> dict[str, str]:
        """The transaction (``to``, ``data``, ``chainId``) of ``admin_call`` for ``wallet``
        to sign, once an eth_call of it from that wallet passes: what the contract would
        refuse is refused here, with its sentence, before the wallet is asked."""
        try:
            data = check_call(self.contract, wallet, admin_call)
        except OperatorError as error:
            raise TransactionRefused(error.phrase) from None
        except ChainError:
            raise LedgerUnavailable("{action} could not be checked: the chain cannot be "
                                    "reached right now; try again in a minute.",
                                    action=admin_call.action) from None
        return {"to": self.deployment.address, "data": data.to_0x_hex(),
                "chainId": hex(self.deployment.chain_id)}

    def slot_clock(self) -> tuple[int, int]:
        """The start of the chain's current slot and the slot length, in seconds."""
        length = int(self._read(Phrase("Reading the slot length"),
                                lambda: self.contract.call(self.contract.abi.slot_seconds())))
        now = self._read(Phrase("Reading the newest block"),
                         lambda: self.w3.eth.get_block("latest")["timestamp"])
        return int(now) // length * length, length

    def current_slot(self) -> int:
        """The start of the slot the chain's newest block is in."""
        return self.slot_clock()[0]
