"""Virtual users for ``bench.cluster``: ``bench.load``'s tutorial flow, over https through HAProxy,
with the retries a supabase-js/py user's app has, every attempt recorded, and every write the
server acknowledged remembered so that ``bench.cluster`` can look for it afterwards.

What is retried (``RETRY``): a request that failed with a transport error (connection refused or
reset, the answer cut short, a timeout) or answered 502, 503 or 504 is sent again after 0.25 s,
and once more after 1 s: three attempts at most, for every step, writes included (a retried write
that had in fact been applied answers like a second one: a sign-up is answered again, an upsert
writes the same values, an upload of a name already taken answers 409 and counts as an error the
user saw). Any other answer, 4xx included, is final. The confirmation mail is awaited for up to
``bench.load.INBOX_WAIT`` seconds.

Each attempt is an ``Attempt``: when it started, how long it took, the step, the attempt number
and what came back (``ok``, the status, or the exception's class name). A step's outcome is a
``Step``: its first attempt's start, the time until its last answer (retries included: what the
user waited), and whether the user finally got what they needed (``ok``) or the error they saw.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.cluster_setup import Mailbox
from bench.load import INBOX_WAIT, Stats, StepFailed, User

#: Back-off before each retry: two retries, three attempts in all.
RETRY = (0.25, 1.0)
RETRY_STATUSES = frozenset({502, 503, 504})


@dataclass
class Attempt:
    started: float
    seconds: float
    step: str
    number: int  # 1 for the first try
    outcome: str  # "ok", an HTTP status, or an exception's class name


@dataclass
class Step:
    started: float
    seconds: float
    step: str
    outcome: str  # "ok" or what the user finally saw
    attempts: int


@dataclass
class Recorder:
    """What every virtual user did (one event loop: no locks)."""

    attempts: list[Attempt] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    flows: list[tuple[float, float, bool]] = field(default_factory=list)  # (started, ended, completed)
    #: Acknowledged writes: sign-ups (email -> user id), profiles (user id -> username), uploads (name -> bytes).
    signups: dict[str, str] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)
    uploads: dict[str, int] = field(default_factory=dict)
    #: The first few answers of each kind of failure, for the report.
    samples: dict[str, str] = field(default_factory=dict)
    #: bench.load's counters: flows that broke on an answer of a shape nobody expected land here.
    stats: Stats = field(default_factory=Stats)
    stopping: bool = False


class ClusterUser(User):
    """``bench.load.User`` with retries, the recorder, and its mail read from the SMTP sink."""

    def __init__(self, number: int, url: str, key: str, run_id: str, png: bytes, recorder: Recorder,
                 mailbox: Mailbox, verify: ssl.SSLContext) -> None:
        super().__init__(number, url, key, run_id, png, recorder.stats, verify=verify)
        self.recorder, self.mailbox = recorder, mailbox

    def going_on(self, deadline: float) -> bool:
        return not self.recorder.stopping

    async def one_flow(self) -> None:
        started = time.perf_counter()
        completed = False
        try:
            await super().one_flow()
            completed = True
        finally:
            self.recorder.flows.append((started, time.perf_counter(), completed))

    async def step(self, name: str, call: Callable[[], Awaitable[httpx.Response]],
                   check: Callable[[httpx.Response], str | None] | None = None, *, record: bool = True) -> httpx.Response:
        began = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            response: httpx.Response | None = None
            failure = ""
            try:
                response = await call()
                outcome = "ok" if 200 <= response.status_code < 400 else str(response.status_code)
            except httpx.HTTPError as error:
                outcome = type(error).__name__
                failure = f"{time.strftime('%H:%M:%S')} {error.request.method} {error.request.url.path}: {error!r}"
            self.recorder.attempts.append(Attempt(started, time.perf_counter() - started, name, attempt, outcome))
            retryable = response is None or response.status_code in RETRY_STATUSES
            if outcome == "ok" or not retryable or attempt > len(RETRY):
                break
            self._sample(name, outcome, response, failure)
            await asyncio.sleep(RETRY[attempt - 1])
        if outcome == "ok" and check is not None and response is not None:
            try:
                problem = check(response)
            except ValueError as error:  # not JSON
                problem = f"unreadable answer ({error})"
            if problem is not None:
                outcome = f"unusable: {problem}"
        self.recorder.steps.append(Step(began, time.perf_counter() - began, name, outcome, attempt))
        if outcome != "ok" or response is None:
            self._sample(name, outcome, response, failure)
            raise StepFailed
        self._acknowledged(name, response)
        return response

    def _sample(self, step: str, outcome: str, response: httpx.Response | None, failure: str) -> None:
        key = f"{step} {outcome}"
        if key not in self.recorder.samples and len(self.recorder.samples) < 40:
            self.recorder.samples[key] = response.text[:300] if response is not None else failure

    def _acknowledged(self, step: str, response: httpx.Response) -> None:
        """Remember what the server said it stored."""
        body: Any = response.json() if step in ("signup", "profile", "avatar") else None
        if step == "signup":
            user = body.get("user") or body
            self.recorder.signups[user["email"]] = user["id"]
        elif step == "profile":
            self.recorder.profiles[body[0]["id"]] = body[0]["username"]
        elif step == "avatar":
            self.recorder.uploads[body["Key"]] = len(self.png)

    async def confirmation(self, email: str) -> str:
        """The confirmation link's token, from the SMTP sink; the step's time is until the mail is there."""
        started = time.perf_counter()
        while (token := self.mailbox.token(email)) is None:
            if time.perf_counter() - started > INBOX_WAIT:
                self.recorder.steps.append(Step(started, time.perf_counter() - started, "inbox", "no mail", 1))
                raise StepFailed
            await asyncio.sleep(0.02)
        self.recorder.steps.append(Step(started, time.perf_counter() - started, "inbox", "ok", 1))
        return token


async def run_users(url: str, key: str, users: int, png: bytes, recorder: Recorder, mailbox: Mailbox,
                    verify: ssl.SSLContext, run_id: str) -> None:
    """Run ``users`` virtual users until ``recorder.stopping``; flows under way are finished."""
    population = [ClusterUser(i, url, key, run_id, png, recorder, mailbox, verify) for i in range(users)]
    await asyncio.gather(*(user.run(0.0) for user in population))


__all__ = ["RETRY", "RETRY_STATUSES", "Attempt", "ClusterUser", "Recorder", "Step", "run_users"]
