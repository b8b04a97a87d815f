"""The portal's EIP-4361 verifier without a chain: the EIP's own example parses, messages the
portal writes round-trip, and every kind of bad message or signature is refused with its
sentence (HTTP-level refusals: tests/test_portal_web.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from portal.siwe import (
    Expected,
    MalformedMessage,
    SignInRefused,
    SiweMessage,
    parse_message,
    verify,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEY = Account.create()
OTHER = Account.create()
DOMAIN = "127.0.0.1:9200"
EXPECTED = Expected(DOMAIN, 8765, NOW)

# The example of EIP-4361 itself, with every optional field.
EIP_EXAMPLE = """service.invalid wants you to sign in with your Ethereum account:
0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2

I accept the ServiceOrg Terms of Service: https://service.invalid/tos

URI: https://service.invalid/login
Version: 1
Chain ID: 1
Nonce: 32891756
Issued At: 2021-09-30T16:25:24Z
Expiration Time: 2021-10-30T16:25:24.000Z
Not Before: 2021-09-30T16:25:24Z
Request ID: 42
Resources:
- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/
- https://example.com/my-web2-claim.json"""


def message(**changes: object) -> SiweMessage:
    base = SiweMessage(domain=DOMAIN, address=KEY.address, statement="Sign in.",
                       uri=f"http://{DOMAIN}/", version="1", chain_id=8765,
                       nonce="a1b2c3d4e5f60718", issued_at=NOW - timedelta(minutes=1),
                       expiration_time=NOW + timedelta(minutes=9))
    return replace(base, **changes)  # type: ignore[arg-type]


def sign(text: str, account: object = KEY) -> str:
    signed = Account.sign_message(encode_defunct(text=text), account.key)  # type: ignore[attr-defined]
    return "0x" + bytes(signed.signature).hex()


def test_the_eip_example_parses_field_by_field() -> None:
    parsed = parse_message(EIP_EXAMPLE)
    assert parsed.domain == "service.invalid"
    assert parsed.address == "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"
    assert parsed.statement == ("I accept the ServiceOrg Terms of Service: "
                                "https://service.invalid/tos")
    assert (parsed.uri, parsed.version, parsed.chain_id, parsed.nonce) == \
        ("https://service.invalid/login", "1", 1, "32891756")
    assert parsed.issued_at == datetime(2021, 9, 30, 16, 25, 24, tzinfo=UTC)
    assert parsed.expiration_time == datetime(2021, 10, 30, 16, 25, 24, tzinfo=UTC)
    assert parsed.request_id == "42"
    assert len(parsed.resources) == 2


@pytest.mark.parametrize("statement", ["Sign in.", None])
def test_a_message_of_the_portal_round_trips_and_verifies(statement: str | None) -> None:
    ours = message(statement=statement)
    text = ours.text()
    assert parse_message(text) == ours
    assert verify(text, sign(text), EXPECTED) == ours


GOOD = message().text()


def broken(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


MALFORMED = {
    "empty": ("", "non-empty text"),
    "no header": (broken(" wants you to sign in", " would like you to sign in"),
                  "the first line must end with"),
    "lower-case address": (broken(KEY.address, KEY.address.lower()), "EIP-55 mixed case"),
    "no address": (broken(KEY.address + "\n", ""), "second line must be the wallet's address"),
    "two-line statement": (broken("Sign in.", "Sign in.\nAnd more."),
                           "statement must be one line"),
    "version 2": (broken("Version: 1", "Version: 2"), "Version must be 1"),
    "hex chain id": (broken("Chain ID: 8765", "Chain ID: 0x223d"), "Chain ID must be"),
    "short nonce": (broken("Nonce: a1b2c3d4e5f60718", "Nonce: abc"), "Nonce must be"),
    "nonce with symbols": (broken("Nonce: a1b2c3d4e5f60718", "Nonce: a1b2c3d4-e5f6"),
                           "Nonce must be"),
    "date without zone": (broken("T11:59:00Z", "T11:59:00"), "RFC 3339"),
    "impossible date": (broken("2026-03-01T11:59:00Z", "2026-02-30T11:59:00Z"),
                        "not a real date"),
    "fields out of order": (broken("URI: ", "Uri: "), "must start with 'URI: '"),
    "unknown trailing line": (GOOD + "\nSession: 1", "is not a field of the message"),
    "bad resource": (GOOD + "\nResources:\n- not a uri", "must be a resource"),
    "carriage returns": (GOOD.replace("\n", "\r\n"), "line feed alone"),
    "relative URI": (broken(f"URI: http://{DOMAIN}/", "URI: /login"), "not an absolute URI"),
    "domain with a path": (broken(f"{DOMAIN} wants", f"{DOMAIN}/x wants"),
                           "is not a host name"),
}


@pytest.mark.parametrize("text, sentence", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_message_is_refused_naming_what_is_wrong(text: str, sentence: str) -> None:
    with pytest.raises(MalformedMessage, match="not a valid EIP-4361 message") as refused:
        verify(text, sign(text or "x"), EXPECTED)
    assert sentence in str(refused.value)


REFUSED = {
    "wrong domain": (message(domain="evil.example", uri="http://evil.example/"),
                     "asks to sign in to evil.example, not to 127.0.0.1:9200"),
    "URI elsewhere": (message(uri="http://evil.example/"), "is not on 127.0.0.1:9200"),
    "wrong chain id": (message(chain_id=1), "is for chain 1, but this portal serves chain 8765"),
    "expired": (message(expiration_time=NOW - timedelta(seconds=1)), "has expired"),
    "not before the future": (message(not_before=NOW + timedelta(hours=1)), "not valid yet"),
    "issued in the future": (message(issued_at=NOW + timedelta(hours=1)),
                             "issued in the future"),
}


@pytest.mark.parametrize("ours, sentence", REFUSED.values(), ids=REFUSED.keys())
def test_a_message_not_for_here_or_now_is_refused(ours: SiweMessage, sentence: str) -> None:
    text = ours.text()
    with pytest.raises(SignInRefused, match=sentence):
        verify(text, sign(text), EXPECTED)


def test_a_signature_of_another_key_is_refused_naming_both_addresses() -> None:
    with pytest.raises(SignInRefused) as refused:
        verify(GOOD, sign(GOOD, OTHER), EXPECTED)
    assert str(refused.value) == (
        f"The signature was made by {OTHER.address}, not by {KEY.address}, the wallet the "
        "message names; nothing was signed in.")


def test_a_signature_of_another_message_is_refused() -> None:
    other_text = message(nonce="ffffffffffffffff").text()
    with pytest.raises(SignInRefused, match="The signature was made by 0x"):
        verify(GOOD, sign(other_text), EXPECTED)


@pytest.mark.parametrize("signature", ["", "0x1234", "0x" + "zz" * 65, "0x" + "00" * 65,
                                       "0x" + "ff" * 65])
def test_a_signature_that_is_not_one_is_refused(signature: str) -> None:
    with pytest.raises(SignInRefused, match="signature"):
        verify(GOOD, signature, EXPECTED)
