"""Claim quotas per wallet address and per client IP, in Flask-Limiter's shared storage.

A claim reserves its quota before anything is sent (one atomic Redis increment per
limit, so concurrent claims for one address cannot both pass) and gives it back if the
send fails, so a user whose claim failed can retry at once. Flask-Limiter's fixed-window
strategy starts each window at its first hit: "1 per 24 hours" means 24 hours after the
claim, and its counters can be decremented, which a refund needs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import redis
from flask_limiter import Limiter
from limits import RateLimitItem
from limits.errors import StorageError

from faucet.errors import RateLimited, StoreUnavailable

log = logging.getLogger(__name__)

# Builds the 429 sentence for one kind of limit from the limit and the wait in seconds.
RefusalText = Callable[[RateLimitItem, int], str]

STORE_DOWN = (
    "The faucet cannot reach the store of its claim limits (Redis), so nothing was sent; "
    "please try again in a minute."
)


@dataclass
class Reservation:
    """The quota one claim has taken: (limit, identifiers) pairs to give back on failure."""

    hits: list[tuple[RateLimitItem, tuple[str, ...]]] = field(default_factory=list)


class ClaimLimits:
    """Per-address and per-IP claim limits on top of a Flask-Limiter's storage and strategy."""

    def __init__(self, limiter: Limiter, address_limits: Sequence[RateLimitItem],
                 ip_limits: Sequence[RateLimitItem]) -> None:
        self.limiter = limiter
        self.address_limits = list(address_limits)
        self.ip_limits = list(ip_limits)

    def reserve(self, address: str, client_ip: str) -> Reservation:
        """Take one claim from the address's and the IP's quota, or raise RateLimited."""
        reservation = Reservation()
        try:
            self._take(reservation, self.address_limits, ("claim-address", address.lower()),
                       address_refusal)
            self._take(reservation, self.ip_limits, ("claim-ip", client_ip), ip_refusal)
        except RateLimited:
            self.refund(reservation)
            raise
        except (StorageError, redis.RedisError) as error:
            log.error("Claim limits unavailable: %s", error)
            self.refund(reservation)
            raise StoreUnavailable(STORE_DOWN) from None
        return reservation

    def refund(self, reservation: Reservation) -> None:
        """Give back what ``reservation`` took (a failed send must not use up the quota)."""
        for item, identifiers in reservation.hits:
            try:
                self.limiter.limiter.hit(item, *identifiers, cost=-1)
            except (StorageError, redis.RedisError) as error:
                log.error("Could not give back a claim quota (%s): %s", item, error)
        reservation.hits.clear()

    def _take(self, reservation: Reservation, items: Sequence[RateLimitItem],
              identifiers: tuple[str, ...], refusal: RefusalText) -> None:
        strategy = self.limiter.limiter
        for item in items:
            if not strategy.hit(item, *identifiers):
                # The failed hit counted too; undo it so the window's count stays exact.
                strategy.hit(item, *identifiers, cost=-1)
                reset_at = strategy.get_window_stats(item, *identifiers).reset_time
                wait = max(1, math.ceil(reset_at - time.time()))
                raise RateLimited(refusal(item, wait), wait)
            reservation.hits.append((item, identifiers))


def address_refusal(item: RateLimitItem, wait: int) -> str:
    """The 429 sentence when the address's quota is used up."""
    return (f"This address has already received test funds (the faucet allows "
            f"{describe_limit(item)} per address); please wait {describe_wait(wait)} "
            "before you try again.")


def ip_refusal(item: RateLimitItem, wait: int) -> str:
    """The 429 sentence when the client IP's quota is used up."""
    return (f"Too many claims from your network address (the faucet allows "
            f"{describe_limit(item)} per IP address); please wait {describe_wait(wait)} "
            "before you try again.")


def describe_limit(item: RateLimitItem) -> str:
    """``1 per 24 hours`` -> "1 claim every 24 hours"; ``10/day`` -> "10 claims a day"."""
    claims = "1 claim" if item.amount == 1 else f"{item.amount} claims"
    unit = item.GRANULARITY.name
    if item.multiples == 1:
        return f"{claims} {'an' if unit == 'hour' else 'a'} {unit}"
    return f"{claims} every {item.multiples} {unit}s"


def describe_period(items: Sequence[RateLimitItem]) -> str:
    """The longest window of ``items`` in words, e.g. "24 hours"."""
    longest = max(items, key=lambda item: item.get_expiry())
    unit = longest.GRANULARITY.name
    return f"{longest.multiples} {unit}s" if longest.multiples != 1 else f"1 {unit}"


def describe_wait(seconds: int) -> str:
    """Seconds as "23 h 59 min", "5 min" or "42 s" (rounded up: never tell users too little)."""
    if seconds < 60:
        return f"{seconds} s"
    minutes = math.ceil(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
