"""Sign-In with Ethereum (EIP-4361): the message parsed strictly, and its signature checked.

Parsed here rather than with a PyPI package: the published parsers pin web3 or pydantic
versions that clash with ours, and the grammar is small. Anything the EIP's ABNF does not
allow is refused, with a sentence saying which line is wrong; the checks against what this
portal expects (domain, URI, chain id, times, the signer) are in :func:`verify`. Whether the
nonce is one the portal issued and still unused is the caller's (``portal.web.store``), as
that needs the database.

The signature is an EIP-191 ``personal_sign`` of the message's UTF-8 text, recovered with
eth-account (``encode_defunct`` + ``Account.recover_message``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.address import is_checksum_address

from pilotchain.errors import Phrase
from portal.errors import PortalError

HEADER = " wants you to sign in with your Ethereum account:"
VERSION = "1"
# RFC 3339 date-time, as the EIP requires (a zone is mandatory: Z or +hh:mm).
_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_NONCE = re.compile(r"^[A-Za-z0-9]{8,}$")
_DOMAIN = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_SIGNATURE = re.compile(r"^0x[0-9a-fA-F]{130}$")
# Optional fields in the order the grammar fixes.
_OPTIONAL = ("Expiration Time", "Not Before", "Request ID")
# How far a client's clock may run ahead of ours for Issued At / Not Before.
CLOCK_SKEW = timedelta(minutes=2)


class SignInRefused(PortalError):
    """The sign-in message or its signature is not accepted; the sentence says why."""


class MalformedMessage(SignInRefused):
    """The text is not an EIP-4361 message."""


@dataclass(frozen=True)
class SiweMessage:
    """The fields of one EIP-4361 message, as written in it."""

    domain: str
    address: str
    statement: str | None
    uri: str
    version: str
    chain_id: int
    nonce: str
    issued_at: datetime
    expiration_time: datetime | None = None
    not_before: datetime | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = ()

    def text(self) -> str:
        """The message as the wallet shows and signs it."""
        lines = [f"{self.domain}{HEADER}", self.address, ""]
        if self.statement is not None:
            lines.append(self.statement)
        lines += ["", f"URI: {self.uri}", f"Version: {self.version}",
                  f"Chain ID: {self.chain_id}", f"Nonce: {self.nonce}",
                  f"Issued At: {_show(self.issued_at)}"]
        if self.expiration_time is not None:
            lines.append(f"Expiration Time: {_show(self.expiration_time)}")
        if self.not_before is not None:
            lines.append(f"Not Before: {_show(self.not_before)}")
        if self.request_id is not None:
            lines.append(f"Request ID: {self.request_id}")
        if self.resources:
            lines.append("Resources:")
            lines += [f"- {resource}" for resource in self.resources]
        return "\n".join(lines)


@dataclass(frozen=True)
class Expected:
    """What a message must say to sign in here."""

    domain: str
    chain_id: int
    now: datetime


def _show(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _bad(template: str, /, **values: object) -> MalformedMessage:
    """MalformedMessage saying what is wrong: ``template`` and ``values`` as a Phrase."""
    return MalformedMessage("The sign-in message is not a valid EIP-4361 message: {reason}",
                            reason=Phrase(template, **values))


def _datetime(name: str, raw: str) -> datetime:
    if not _DATETIME.match(raw):
        raise _bad("{name} must be an RFC 3339 time such as 2026-01-31T12:00:00Z, not "
                   "{raw!r}.", name=name, raw=raw[:40])
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise _bad("{name} {raw!r} is not a real date and time.", name=name,
                   raw=raw[:40]) from None


def _field(lines: list[str], index: int, name: str) -> str:
    prefix = f"{name}: "
    if index >= len(lines) or not lines[index].startswith(prefix):
        raise _bad("line {line} must start with {prefix!r}.", line=index + 1, prefix=prefix)
    return lines[index][len(prefix):]


def parse_message(text: str) -> SiweMessage:
    """The fields of ``text``, or MalformedMessage naming the first thing wrong."""
    if not isinstance(text, str) or not text or len(text) > 4096:
        raise _bad("it must be non-empty text of at most 4,096 characters.")
    if "\r" in text:
        raise _bad("lines must end with a line feed alone.")
    lines = text.split("\n")
    if not lines[0].endswith(HEADER):
        raise _bad("the first line must end with {header!r}.", header=HEADER.strip())
    domain = lines[0][:-len(HEADER)]
    if not _DOMAIN.match(domain):
        raise _bad("the domain {domain!r} is not a host name with an optional port.",
                   domain=domain[:60])
    if len(lines) < 9:
        raise _bad("it is too short.")
    address = lines[1]
    if not _ADDRESS.match(address) or not is_checksum_address(address):
        raise _bad("the second line must be the wallet's address in EIP-55 mixed case.")
    if lines[2] != "":
        raise _bad("line 3 must be empty.")
    statement: str | None = None
    index = 3
    if lines[3] != "":
        statement, index = lines[3], 4
        if lines[4] != "":
            raise _bad("the statement must be one line followed by an empty line.")
    index += 1
    uri = _field(lines, index, "URI")
    version = _field(lines, index + 1, "Version")
    if version != VERSION:
        raise _bad("Version must be 1, not {version!r}.", version=version[:10])
    chain_raw = _field(lines, index + 2, "Chain ID")
    if not chain_raw.isdigit() or chain_raw.startswith("0"):
        raise _bad("Chain ID must be a positive whole number, not {chain!r}.",
                   chain=chain_raw[:20])
    nonce = _field(lines, index + 3, "Nonce")
    if not _NONCE.match(nonce):
        raise _bad("Nonce must be at least 8 letters and digits.")
    issued_at = _datetime("Issued At", _field(lines, index + 4, "Issued At"))
    optional, rest = _optional_fields(lines, index + 5)
    resources = _resources(lines, rest)
    if not _absolute_uri(uri):
        raise _bad("URI {uri!r} is not an absolute URI.", uri=uri[:60])
    return SiweMessage(
        domain=domain, address=address, statement=statement, uri=uri, version=version,
        chain_id=int(chain_raw), nonce=nonce, issued_at=issued_at,
        expiration_time=_maybe_datetime("Expiration Time", optional),
        not_before=_maybe_datetime("Not Before", optional),
        request_id=optional.get("Request ID"), resources=resources)


def _optional_fields(lines: list[str], index: int) -> tuple[dict[str, str], int]:
    found: dict[str, str] = {}
    for name in _OPTIONAL:
        if index < len(lines) and lines[index].startswith(f"{name}: "):
            found[name] = lines[index][len(name) + 2:]
            index += 1
    return found, index


def _maybe_datetime(name: str, fields: dict[str, str]) -> datetime | None:
    return _datetime(name, fields[name]) if name in fields else None


def _resources(lines: list[str], index: int) -> tuple[str, ...]:
    if index == len(lines):
        return ()
    if lines[index] != "Resources:":
        raise _bad("line {line} ({text!r}) is not a field of the message or is out of order.",
                   line=index + 1, text=lines[index][:40])
    resources = []
    for number, line in enumerate(lines[index + 1:], start=index + 2):
        if not line.startswith("- ") or not _absolute_uri(line[2:]):
            raise _bad("line {line} must be a resource: '- ' and an absolute URI.",
                       line=number)
        resources.append(line[2:])
    return tuple(resources)


def _absolute_uri(uri: str) -> bool:
    parts = urlsplit(uri)
    return bool(parts.scheme) and (bool(parts.netloc) or bool(parts.path)) and " " not in uri


def recover_signer(text: str, signature: str) -> str:
    """The address whose key made ``signature`` (0x and 65 bytes of hex) over ``text``."""
    if not isinstance(signature, str) or not _SIGNATURE.match(signature):
        raise SignInRefused("The signature must be 0x followed by 130 hexadecimal digits, as "
                            "the wallet returns it.")
    try:
        signer: str = Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception:  # eth-keys raises several kinds for a signature that is not one
        raise SignInRefused("The signature is not a valid Ethereum signature.") from None
    return signer


def verify(text: str, signature: str, expected: Expected) -> SiweMessage:
    """The message, if it is well formed, meant for this portal and chain, within its time
    window, and signed by the address it names; SignInRefused otherwise."""
    message = parse_message(text)
    if message.domain.lower() != expected.domain.lower():
        raise SignInRefused(
            "The message asks to sign in to {asked}, not to {domain}; nothing was signed in. "
            "Sign in from this portal's own page.", asked=message.domain,
            domain=expected.domain)
    if urlsplit(message.uri).netloc.lower() != expected.domain.lower():
        raise SignInRefused("The message's URI {uri} is not on {domain}.", uri=message.uri,
                            domain=expected.domain)
    if message.chain_id != expected.chain_id:
        raise SignInRefused(
            "The message is for chain {asked}, but this portal serves chain {chain}; switch "
            "the wallet to this network and sign in again.", asked=message.chain_id,
            chain=expected.chain_id)
    now = expected.now
    if message.expiration_time is not None and message.expiration_time <= now:
        raise SignInRefused("The sign-in message has expired; sign in again.")
    if message.not_before is not None and message.not_before > now + CLOCK_SKEW:
        raise SignInRefused("The sign-in message is not valid yet (Not Before is in the "
                            "future); check the computer's clock.")
    if message.issued_at > now + CLOCK_SKEW:
        raise SignInRefused("The sign-in message was issued in the future; check the "
                            "computer's clock.")
    signer = recover_signer(text, signature)
    if signer != message.address:
        raise SignInRefused(
            "The signature was made by {signer}, not by {wallet}, the wallet the message "
            "names; nothing was signed in.", signer=signer, wallet=message.address)
    return message
