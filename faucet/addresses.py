"""Checking a wallet address typed by a person, with a sentence for each way it can be wrong."""

from __future__ import annotations

import re

from eth_typing import ChecksumAddress
from eth_utils.address import is_checksum_address, to_checksum_address

from faucet.errors import InvalidAddress

HEX_DIGITS = re.compile(r"[0-9a-fA-F]*")
ZERO_ADDRESS = "0x" + "0" * 40

EMPTY = "Enter a wallet address: 0x followed by 40 hexadecimal digits."
NOT_TEXT = "The address must be text: 0x followed by 40 hexadecimal digits."
NO_PREFIX = "A wallet address starts with 0x, followed by 40 hexadecimal digits."
NOT_HEX = "A wallet address may contain only the digits 0-9 and the letters a-f after 0x."
BAD_CHECKSUM = (
    "The mix of upper- and lower-case letters in this address does not match its checksum "
    "(EIP-55), so it was probably mistyped; copy it again from your wallet."
)
ZERO = "The zero address cannot receive test funds; enter your own wallet address."


def wrong_length(digits: int) -> str:
    """The sentence for an address with ``digits`` hex digits instead of 40."""
    return f"A wallet address has 40 hexadecimal digits after 0x; this one has {digits}."


def missing_prefix(digits: str) -> str:
    """The sentence for 40 hex digits without 0x, suggesting the fix."""
    return f"A wallet address starts with 0x; did you mean 0x{digits}?"


def parse_address(raw: object) -> ChecksumAddress:
    """The checksummed address in ``raw``, or InvalidAddress saying what is wrong with it.

    All-lower or all-upper case addresses carry no checksum and are taken as they are; a
    mixed-case one must match its EIP-55 checksum, which catches most typos.
    """
    if raw is None:
        raise InvalidAddress(EMPTY)
    if not isinstance(raw, str):
        raise InvalidAddress(NOT_TEXT)
    text = raw.strip()
    if not text:
        raise InvalidAddress(EMPTY)
    if not text.lower().startswith("0x"):
        if len(text) == 40 and HEX_DIGITS.fullmatch(text):
            raise InvalidAddress(missing_prefix(text))
        raise InvalidAddress(NO_PREFIX)
    digits = text[2:]
    if not HEX_DIGITS.fullmatch(digits):
        raise InvalidAddress(NOT_HEX)
    if len(digits) != 40:
        raise InvalidAddress(wrong_length(len(digits)))
    address = "0x" + digits
    mixed_case = digits != digits.lower() and digits != digits.upper()
    if mixed_case and not is_checksum_address(address):
        raise InvalidAddress(BAD_CHECKSUM)
    if address.lower() == ZERO_ADDRESS:
        raise InvalidAddress(ZERO)
    return to_checksum_address(address)
