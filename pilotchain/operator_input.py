"""The grid operator's input, checked at the door: ids, addresses, times, rates and seconds
as typed on the command line (``pilotchain meters|rates|periods|slots``) or into the
portal's back-office forms, each refused with a sentence that says what form it must have.

Ids are written as a uuid (gsy-e's, and :func:`pilotchain.metering.meter_id`'s), ``0x`` and 64
hex digits, or ``operator`` for the grid operator's own participant id. Times are unix
seconds or ISO-8601 (UTC unless an offset is given). Rates are euro cents per kWh as exact
decimals: the contract's integers are those values times 10**18.

The chain side (:mod:`pilotchain.operator`) takes only the typed values these return, so the
slot closer and the portal's reads depend on none of this.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from eth_typing import ChecksumAddress
from web3 import Web3

from pilotchain.errors import Phrase
from pilotchain.metering import OPERATOR
from pilotchain.operator import OPERATOR_NAME, SCALE, OperatorError, units

MAX_RATE = 2**96 - 1  # the contract keeps rates as uint96
_HEX_64 = re.compile(r"[0-9a-fA-F]{64}")
# ASCII digits only: str.isdigit also takes "²" (which int() refuses) and other scripts'.
_DIGITS = re.compile(r"[0-9]{1,40}")
# 9999-12-31T23:59:59Z, the last second ISO-8601 times here can name.
MAX_TIME = 253_402_300_799


class InvalidInput(OperatorError, ValueError):
    """A command-line value has the wrong form (an id, an address, a time, a rate)."""


# What a value is, named in its sentence: words of ours, which the portal shows translated
# (a caller may pass its own ``what``; the command line's stay English).
ID = Phrase("id")
METER_ID = Phrase("meter id")
HOME_AREA = Phrase("home area")
PARTICIPANT = Phrase("participant")
ADDRESS = Phrase("address")
RATE = Phrase("rate")


def parse_id(text: str, what: str = ID) -> bytes:
    """A bytes32 id from a uuid or ``0x`` + 64 hex digits (exactly: ``bytes.fromhex`` alone
    would also take spaces between the digits and give fewer than 32 bytes)."""
    value = text.strip()
    if value.lower().startswith("0x"):
        if _HEX_64.fullmatch(value[2:]):
            return bytes.fromhex(value[2:])
    else:
        try:
            return bytes(16) + uuid.UUID(value).bytes
        except ValueError:
            pass
    raise InvalidInput("The {what} {text!r} is neither a uuid nor 0x and 64 hex digits.",
                       what=what, text=text)


def parse_meter(text: str) -> bytes:
    return parse_id(text, METER_ID)


def parse_area(text: str) -> bytes:
    return parse_id(text, HOME_AREA)


def parse_participant(text: str) -> bytes:
    """A participant id, or ``operator`` for the grid operator's own."""
    if text.strip().lower() == OPERATOR_NAME:
        return OPERATOR
    return parse_id(text, PARTICIPANT)


def parse_address(text: str, what: str = ADDRESS) -> ChecksumAddress:
    """An Ethereum address (checksummed if it is mixed case)."""
    value = text.strip()
    if not Web3.is_address(value):
        raise InvalidInput("The {what} {text!r} is not an Ethereum address (0x and 40 hex "
                           "digits, with a valid checksum if mixed case).", what=what, text=text)
    if int(value, 16) == 0:
        raise InvalidInput("The {what} cannot be the zero address.", what=what)
    return Web3.to_checksum_address(value)


def parse_time(text: str) -> int:
    """Unix seconds from ``1782000900`` or ISO-8601 (``2026-06-21T00:15:00Z``; UTC unless an
    offset is given)."""
    value = text.strip()
    if _DIGITS.fullmatch(value):
        seconds = int(value)
    else:
        try:
            moment = datetime.fromisoformat(value.replace("z", "Z"))
        except ValueError:
            raise InvalidInput("The time {text!r} is neither unix seconds nor ISO-8601 such "
                               "as 2026-06-21T00:15:00Z.", text=text[:60]) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        exact = moment.timestamp()
        if exact != int(exact):
            raise InvalidInput("The time {text!r} must be whole seconds after 1970.",
                               text=text)
        seconds = int(exact)
    # The contract keeps times as uint64; within the calendar's years is far inside that.
    if not 0 <= seconds <= MAX_TIME:
        raise InvalidInput("The time {text!r} must be whole seconds after 1970 and before "
                           "the year 10000.", text=text[:60])
    return seconds


def parse_rate(text: str, what: str = RATE) -> int:
    """Euro cents per kWh as a decimal (``12.5``) in the contract's unit (x 10**18)."""
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidInput("The {what} {text!r} is not a number of euro cents per kWh.",
                           what=what, text=text) from None
    if not number.is_finite() or number < 0:
        raise InvalidInput("The {what} {text!r} must be a number of euro cents per kWh, at "
                           "least 0.", what=what, text=text)
    scaled = number * SCALE
    if scaled != scaled.to_integral_value():
        raise InvalidInput("The {what} {text!r} has more than 18 decimals.", what=what,
                           text=text)
    if scaled > MAX_RATE:
        raise InvalidInput("The {what} {text!r} is too large for the contract (at most "
                           "{most} ct/kWh).", what=what, text=text, most=units(MAX_RATE))
    return int(scaled)


def parse_seconds(text: str) -> int:
    """A whole, positive number of seconds."""
    try:
        seconds = int(text)
    except ValueError:
        seconds = -1
    if seconds <= 0 or seconds >= 2**64:
        raise InvalidInput("{text!r} is not a whole number of seconds above 0.", text=text)
    return seconds
