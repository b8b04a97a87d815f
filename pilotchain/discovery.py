"""Is a node's discovery endpoint alive? One discovery v4 PING, answered by a PONG.

A bootnode answers only discovery (UDP), so a TCP connection cannot tell whether it is up;
``network status`` asks it the way geth does (devp2p's discv4 wire format: a packet is
``hash || signature || type || rlp(data)``) and accepts only a PONG that echoes this ping's
hash, signed by the key the manifest names for it.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import time

import rlp
from eth_keys.datatypes import PrivateKey, Signature
from eth_keys.exceptions import BadSignature
from eth_utils.crypto import keccak

PING, PONG = 1, 2
# geth drops a ping whose expiration has passed; a few seconds cover any travel time.
EXPIRATION = 20


def ping(host: str, port: int, pubkey: str, *, timeout: float = 2.0) -> bool:
    """True if the node at ``host``:``port`` (UDP) with enode public key ``pubkey`` answers."""
    ip = ipaddress.ip_address(host)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    key = PrivateKey(secrets.token_bytes(32))  # a throwaway identity for this one ping
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind(("::" if ip.version == 6 else "0.0.0.0", 0))
        local_port = sock.getsockname()[1]
        endpoint = [ip.packed, port, 0]
        packet = _packet(key, PING, [4, [ip.packed, local_port, 0], endpoint,
                                     int(time.time()) + EXPIRATION])
        deadline = time.monotonic() + timeout
        try:
            sock.sendto(packet, (str(ip), port))
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                reply, _ = sock.recvfrom(1280)
                if _is_pong(reply, packet[:32], pubkey):
                    return True
        except OSError:  # timed out, refused (ICMP), unreachable
            return False
    return False


def _packet(key: PrivateKey, kind: int, data: list[object]) -> bytes:
    payload = bytes([kind]) + bytes(rlp.encode(data))
    signature = key.sign_msg_hash(keccak(payload)).to_bytes()
    return keccak(signature + payload) + signature + payload


def _is_pong(reply: bytes, ping_hash: bytes, pubkey: str) -> bool:
    """A PONG echoing ``ping_hash``, intact and signed by ``pubkey``."""
    if len(reply) < 98 or keccak(reply[32:]) != reply[:32] or reply[97] != PONG:
        return False
    payload = reply[97:]
    try:
        sender = Signature(reply[32:97]).recover_public_key_from_msg_hash(keccak(payload))
        fields = rlp.decode(payload[1:], strict=False)
    except (BadSignature, rlp.DecodingError, ValueError):
        return False
    return sender.to_bytes().hex() == pubkey and isinstance(fields, list) and \
        len(fields) >= 2 and fields[1] == ping_hash
