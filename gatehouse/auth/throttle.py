"""Throttling password guesses without handing attackers a way to lock owners out.

Every check of a password against an account (log-in by password, ``current_password`` on
``PUT /user``) goes through ``PasswordThrottle.begin`` first and reports its outcome to the
returned ``Attempt``. All counters live in PostgreSQL (``gatehouse.core.ratelimit``), so every
process shares them. The scheme, for an attempt on account A from client address IP:

1. **Per address** (``GATEHOUSE_RATE_LIMIT_TOKEN``, counted by the caller): every token request
   from IP, whatever the account.
2. **Trusted device.** If the client sends a valid device cookie for A (``auth.devices``), the
   attempt is counted against that cookie (``GATEHOUSE_RATE_LIMIT_PASSWORD_DEVICE``) and goes
   ahead: no per-account or per-address-and-account limit applies, so nothing an attacker does
   elsewhere refuses a browser that has logged in to A before. A cookie over its own budget of
   failures is not trusted any more and takes the untrusted path.
3. **Untrusted: per address and account** (``GATEHOUSE_RATE_LIMIT_PASSWORD_CLIENT``). Over it,
   IP is refused for A (429); its failures on other accounts, and other addresses, are
   unaffected.
4. **Untrusted: per account, slow down.** Once A's failures in the window
   (``GATEHOUSE_RATE_LIMIT_PASSWORD_ATTEMPTS``, counted from untrusted clients) reach the budget,
   an untrusted client must wait for A's next slot: each attempt claims it and moves it an
   increasing delay ahead (1 s, doubling with each further failure, at most
   ``GATEHOUSE_PASSWORD_SLOWDOWN_MAX``); a client that comes early gets 429 with ``Retry-After``.
   This never refuses for long: the wait is bounded, and a client address with no failures on A
   in its window (step 3's counter is empty) is let through without waiting, so an owner on a new
   device at a clean address always gets a try. The price is that an attacker with many
   addresses gets one guess per address and window beyond the slowed rate; the per-address limit
   and the password policy (length, no common passwords) bound that.

Attempts are counted before the password is checked and refunded when it was right, so only
failures stay counted and a burst of concurrent guesses cannot all pass a check that none of
them has failed yet. A refused attempt keeps its count on the per-address-and-account key (a
client that keeps hammering stays refused) but not when only the slow-down refused it (an owner
retrying at a busy account does not use up their own budget).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg

from gatehouse.auth.devices import DeviceCookies
from gatehouse.core.db import Database
from gatehouse.core.ratelimit import Count, RateLimited, RateLimiter

__all__ = ["Attempt", "PasswordThrottle"]


def slowdown_delay(failures: float, budget: int, longest: int) -> int:
    """Seconds between untrusted attempts once ``failures`` reach ``budget``: 1, 2, 4, ... ``longest``."""
    excess = int(failures) - budget  # 0 at the budget
    if excess < 0:
        return 0
    return int(min(longest, 2 ** min(excess, 30)))


@dataclass
class Attempt:
    """One password check under way; tell it how the check went."""

    throttle: PasswordThrottle
    account: str
    trusted: bool
    counted: list[Count] = field(default_factory=list)

    async def succeeded(self) -> None:
        """The password was right: the attempt stops counting anywhere."""
        for counted in self.counted:
            await self.throttle.limiter.refund(self.throttle.db, counted)
        self.counted.clear()

    async def failed(self) -> None:
        """The password was wrong: it stays counted, and an untrusted failure counts for the account."""
        if not self.trusted:
            await self.throttle.limiter.count(
                self.throttle.db, _account_key(self.account), self.throttle.limiter.limits.password_attempts
            )
        self.counted.clear()


def _account_key(account: str) -> str:
    return f"password:{account}"


class PasswordThrottle:
    def __init__(self, limiter: RateLimiter, database: Database, devices: DeviceCookies, slowdown_max: int) -> None:
        self.limiter = limiter
        self.database = database
        self.devices = devices
        self.slowdown_max = slowdown_max

    @property
    def db(self) -> asyncpg.Pool:
        """The admin pool: counters are never written inside a request's transaction."""
        return self.database.admin

    async def begin(self, account: str, ip: str, cookies: Mapping[str, str]) -> Attempt:
        """Count an attempt on ``account`` (normalised email) from ``ip``; 429 if it may not go ahead."""
        limits = self.limiter.limits
        nonce = self.devices.nonce(account, cookies)
        if nonce is not None:
            device = await self.limiter.count(self.db, f"password-device:{nonce}", limits.password_device)
            if not device.over:
                return Attempt(self, account, trusted=True, counted=[device])
        pair = await self.limiter.count(self.db, f"password-client:{ip}\0{account}", limits.password_client)
        if pair.over:
            raise RateLimited(
                "over_request_rate_limit",
                f"Too many failed log-ins for this account from your address. Try again in {pair.retry_after} seconds.",
                pair.retry_after,
            )
        if not pair.alone:
            budget = limits.password_attempts
            failures = await self.limiter.peek(self.db, _account_key(account), budget)
            delay = slowdown_delay(failures, budget.count, self.slowdown_max)
            if delay:
                wait = await self.limiter.claim(self.db, f"slowdown:{account}", delay)
                if wait:
                    await self.limiter.refund(self.db, pair)
                    raise RateLimited(
                        "over_request_rate_limit",
                        f"This account has had many failed log-ins: wait {wait} seconds before trying again, "
                        "or log in from a browser you have used for it before.",
                        wait,
                    )
        return Attempt(self, account, trusted=False, counted=[pair])
