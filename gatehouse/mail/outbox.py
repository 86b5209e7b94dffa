"""The outbox: mail is a row written with the change that needs it, and delivered from there.

* ``enqueue`` runs on the caller's connection, inside the caller's transaction: the email
  commits or rolls back with the change (no user without their confirmation email, no email
  for a change that never happened). A ``NOTIFY`` wakes the senders, on commit only.
* ``deliver_pending`` claims one due row at a time (``FOR UPDATE SKIP LOCKED``, committed at
  once as status ``sending`` with a lease), sends it outside any transaction, then records the
  attempt and the outcome. Any number of processes may run it: a row is claimed by one at a
  time. The lease is short (``DEFAULT_LEASE``) and renewed every third of it while the send
  lasts, so a slow server keeps its message, and a sender killed mid-send delays its message by
  one lease at most: its row stays ``sending`` until the lease runs out, then is claimable.
  Delivery is therefore at least once: a crash after the server accepted the message but before
  the row was marked sent resends it, with the same Message-ID.
* Failed attempts are retried with exponential back-off (capped at 15 minutes). Only attempts
  the server *refused* count towards ``max_attempts``; while the server cannot be reached the
  mail waits, however long that takes, and each try is in the delivery log
  (``gatehouse.mail_attempts``).
* ``OutboxSender`` runs ``deliver_pending`` in the background, woken by ``NOTIFY`` or a poll.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from gatehouse.core import background
from gatehouse.core.db import Conn, Database, Queryable
from gatehouse.core.listen import HeldListener, ListenHub
from gatehouse.core.metrics import Figure
from gatehouse.mail.base import MailDeliveryError, Mailer, Message

log = logging.getLogger("gatehouse.mail")

#: The channel ``enqueue`` notifies and ``OutboxSender`` listens on.
CHANNEL = "gatehouse_mail"
#: Seconds a claim holds a row without a renewal; renewed every third of it while the send lasts
#: (the SMTP mailer may take 30 s for each command), so a killed sender's message waits this long.
DEFAULT_LEASE = 15.0
#: The longest wait between two attempts at one message, in seconds.
RETRY_CAP = 900.0
#: What a lost or refusing database raises; the sender logs these and tries again.
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

_ENQUEUE = """
WITH queued AS (
    INSERT INTO gatehouse.mail_outbox (kind, to_address, subject, text_body, html_body, user_id)
    VALUES ($1, $2, $3, $4, $5, $6)
    RETURNING id
)
SELECT id, pg_notify('gatehouse_mail', '') FROM queued
"""

# One statement, so the row lock lasts only as long as it takes to write the lease.
_CLAIM = """
UPDATE gatehouse.mail_outbox AS o
SET status = 'sending', locked_until = now() + make_interval(secs => $1), claim = gen_random_uuid()
WHERE o.id = (
    SELECT id FROM gatehouse.mail_outbox
    WHERE status IN ('pending', 'sending')
      AND next_attempt_at <= now()
      AND (locked_until IS NULL OR locked_until <= now())
    ORDER BY next_attempt_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING o.id, o.claim, o.kind, o.to_address, o.subject, o.text_body, o.html_body, o.user_id, o.message_id,
    (SELECT count(*) FROM gatehouse.mail_attempts AS a WHERE a.outbox_id = o.id) AS tries
"""

# Held a while longer, by the claim that holds it.
_RENEW = """
UPDATE gatehouse.mail_outbox SET locked_until = now() + make_interval(secs => $3)
WHERE id = $1 AND claim = $2 AND status = 'sending'
"""

# The attempt is logged whatever happens; the row changes only if this claim still holds it.
_SENT = """
WITH attempt AS (
    INSERT INTO gatehouse.mail_attempts (outbox_id, ok, response) VALUES ($1, true, $3)
)
UPDATE gatehouse.mail_outbox
SET status = 'sent', sent_at = now(), attempts = attempts + 1, locked_until = NULL, last_error = NULL
WHERE id = $1 AND claim = $2 AND status = 'sending'
"""

_FAILED = """
WITH attempt AS (
    INSERT INTO gatehouse.mail_attempts (outbox_id, ok, response) VALUES ($1, false, $3)
)
UPDATE gatehouse.mail_outbox
SET attempts = attempts + $4::boolean::int,
    status = CASE WHEN $4 AND attempts + 1 >= $5 THEN 'failed' ELSE 'pending' END,
    next_attempt_at = now() + make_interval(secs => $6),
    locked_until = NULL,
    last_error = $3
WHERE id = $1 AND claim = $2 AND status = 'sending'
RETURNING status
"""

_RECENT = """
SELECT id, kind, to_address, subject, text_body, html_body, status, attempts, created_at,
    next_attempt_at, sent_at, last_error, user_id
FROM gatehouse.mail_outbox
WHERE $2::text IS NULL OR lower(to_address) = lower($2)
ORDER BY id DESC
LIMIT $1
"""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A row of the outbox, as the development inbox shows it."""

    id: int
    kind: str
    to: str
    subject: str
    text: str
    html: str | None
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None
    last_error: str | None
    user_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    attempted_at: datetime
    ok: bool
    response: str


@dataclass(frozen=True, slots=True)
class Claim:
    """A message this sender holds until its lease ends; ``claim`` fences the outcome it records."""

    id: int
    claim: uuid.UUID
    tries: int  # attempts logged before this one
    message: Message


async def enqueue(conn: Conn, message: Message) -> int:
    """Queue ``message``; return its outbox id.

    Call it on the connection of the transaction making the change the email is about, so both
    commit or neither does. One round trip: the INSERT and the NOTIFY are one statement.
    """
    outbox_id: int = await conn.fetchval(
        _ENQUEUE, message.kind, message.to, message.subject, message.text, message.html, message.user_id
    )
    return outbox_id


def retry_delay(tries: int, *, rand: Callable[[], float] = random.random) -> float:
    """Seconds before the next attempt after ``tries`` failed ones: 2, 4, 8, ... up to 15 minutes.

    Jittered down by up to a quarter, so mail queued together during an outage does not come
    back all at once.
    """
    base = min(RETRY_CAP, 2.0 ** min(tries, 32))
    return base * (1.0 - 0.25 * rand())


async def claim_next(pool: asyncpg.Pool, *, lease_seconds: float = DEFAULT_LEASE) -> Claim | None:
    """Take the next due message (pending, or with an expired lease) for ``lease_seconds``."""
    row = await pool.fetchrow(_CLAIM, float(lease_seconds))
    if row is None:
        return None
    message = Message(
        to=row["to_address"],
        subject=row["subject"],
        text=row["text_body"],
        html=row["html_body"],
        kind=row["kind"],
        user_id=row["user_id"],
        message_id=str(row["message_id"]),
    )
    return Claim(row["id"], row["claim"], int(row["tries"]), message)


async def deliver_pending(
    pool: asyncpg.Pool,
    mailer: Mailer,
    *,
    max_attempts: int,
    batch: int = 20,
    lease_seconds: float = DEFAULT_LEASE,
) -> int:
    """Deliver up to ``batch`` due messages; return how many the server accepted.

    The round stops early when nothing is due, or when the server cannot be reached: the
    other messages would only fail the same way, and the next round tries again.
    """
    sent = 0
    for _ in range(batch):
        job = await claim_next(pool, lease_seconds=lease_seconds)
        if job is None:
            break
        try:
            answer = await _send_holding(pool, mailer, job, lease_seconds)
        except MailDeliveryError as exc:
            status = await _record_failure(pool, job, exc.message, refused=exc.refused, max_attempts=max_attempts)
            log.warning("mail %s (%s) not delivered, now %s: %s", job.id, job.message.kind, status, exc.message)
            if not exc.refused:
                break
            continue
        except Exception as exc:
            # A mailer bug, not an outage: count it, so one poisonous message cannot loop forever.
            log.exception("mail %s (%s): the mailer failed unexpectedly", job.id, job.message.kind)
            await _record_failure(pool, job, f"{type(exc).__name__}: {exc}", refused=True, max_attempts=max_attempts)
            continue
        await pool.execute(_SENT, job.id, job.claim, answer)
        log.info("mail %s (%s) delivered: %s", job.id, job.message.kind, answer)
        sent += 1
    return sent


async def _send_holding(pool: asyncpg.Pool, mailer: Mailer, job: Claim, lease_seconds: float) -> str:
    """Send ``job``'s message, renewing its lease every third of it while the send lasts."""

    async def renew() -> None:
        while True:
            await asyncio.sleep(lease_seconds / 3)
            try:
                status = await pool.execute(_RENEW, job.id, job.claim, float(lease_seconds))
            except _DB_ERRORS as exc:  # the send goes on; another sender may take the message over
                log.warning("mail %s: could not renew its lease (%s)", job.id, exc)
                continue
            if status == "UPDATE 0":
                return  # taken over after a lapse: what this send records is fenced off anyway

    renewer = asyncio.create_task(renew(), name=f"gatehouse-mail-lease-{job.id}")
    try:
        return await mailer.send(job.message)
    finally:
        await background.cancel(renewer)


async def _record_failure(pool: asyncpg.Pool, job: Claim, error: str, *, refused: bool, max_attempts: int) -> str:
    status: str | None = await pool.fetchval(
        _FAILED, job.id, job.claim, error, refused, max_attempts, retry_delay(job.tries + 1)
    )
    return status or "taken over by another sender"


async def recent(pool: asyncpg.Pool, limit: int = 50, *, to: str | None = None) -> list[OutboxEntry]:
    """The newest messages first, optionally only those to one address (case-insensitive)."""
    rows = await pool.fetch(_RECENT, limit, to)
    return [
        OutboxEntry(
            id=row["id"],
            kind=row["kind"],
            to=row["to_address"],
            subject=row["subject"],
            text=row["text_body"],
            html=row["html_body"],
            status=row["status"],
            attempts=row["attempts"],
            created_at=row["created_at"],
            next_attempt_at=row["next_attempt_at"],
            sent_at=row["sent_at"],
            last_error=row["last_error"],
            user_id=row["user_id"],
        )
        for row in rows
    ]


async def delivery_log(pool: asyncpg.Pool, outbox_id: int) -> list[DeliveryAttempt]:
    """Every attempt at one message, oldest first, with the server's answer or the error."""
    rows = await pool.fetch(
        "SELECT attempted_at, ok, response FROM gatehouse.mail_attempts WHERE outbox_id = $1 ORDER BY attempted_at, id",
        outbox_id,
    )
    return [DeliveryAttempt(row["attempted_at"], row["ok"], row["response"]) for row in rows]


async def backlog(pool: asyncpg.Pool) -> int:
    """How many messages are not sent yet (waiting, or being sent now)."""
    count: int = await pool.fetchval("SELECT count(*) FROM gatehouse.mail_outbox WHERE status IN ('pending', 'sending')")
    return count


_RETRY = """
WITH due AS (
    UPDATE gatehouse.mail_outbox SET status = 'pending', next_attempt_at = now()
    WHERE id = $1 AND status IN ('pending', 'failed')
    RETURNING id
)
SELECT id, pg_notify('gatehouse_mail', '') FROM due
"""


async def retry(db: Queryable, outbox_id: int) -> bool:
    """Make a waiting or failed message due now and wake the senders; False if it is neither.

    A failed message gets one more attempt: its refusals so far still count, so another refusal
    fails it again at once. A message being sent, sent or cancelled is left as it is.
    """
    row = await db.fetchrow(_RETRY, outbox_id)
    return row is not None


async def cancel(db: Queryable, outbox_id: int) -> bool:
    """Never send a message that is waiting; False if it is not (being sent, sent, failed, cancelled).

    The row stays, as the record of a message that was not sent. A sender claims a row and this
    changes one in a single statement each, so the message is either cancelled or sent, not both.
    """
    done = await db.fetchval(
        "UPDATE gatehouse.mail_outbox SET status = 'cancelled', locked_until = NULL WHERE id = $1 "
        "AND status = 'pending' RETURNING id",
        outbox_id,
    )
    return done is not None


def figures(database: Database) -> list[Figure]:
    """The outbox's figures for /metrics: its backlog, read through the admin pool at each scrape."""
    return [Figure("gatehouse_mail_outbox_backlog", "Emails not yet sent", lambda: backlog(database.admin))]


class OutboxSender:
    """Delivers the outbox in the background until stopped.

    Each round runs ``deliver_pending``; between rounds it waits for a ``NOTIFY`` on
    ``gatehouse_mail`` (so new mail goes out at once) or ``poll_interval`` seconds (for retries
    coming due, and in case a notification was missed). It listens on ``hub`` (the process's
    shared LISTEN connection; without one, a hub of its own on ``pool``); while that is away it
    still polls, and it runs a round as soon as it is back. Database and mailer errors are logged
    and retried: they never end the task.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        mailer: Mailer,
        *,
        max_attempts: int,
        poll_interval: float = 5.0,
        batch: int = 20,
        lease_seconds: float = DEFAULT_LEASE,
        hub: ListenHub | None = None,
    ) -> None:
        self._pool = pool
        self._mailer = mailer
        self._max_attempts = max_attempts
        self._poll_interval = poll_interval
        self._batch = batch
        self._lease_seconds = lease_seconds
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._listener = HeldListener(hub or ListenHub(pool), (CHANNEL,), self._on_notify, name="mail",
                                      on_reconnect=self._wake.set)  # mail queued meanwhile: a round now

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self.running:
            return
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="gatehouse-mail-sender")

    async def stop(self, timeout: float = 10.0) -> None:
        """Let the message being sent finish (up to ``timeout`` seconds), then end the task.

        A send cut short by the timeout leaves its row ``sending``; it goes out again once its
        lease expires.
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def wake(self) -> None:
        """Start a round now (for mail queued in this process when LISTEN is unavailable)."""
        self._wake.set()

    async def _run(self) -> None:
        self._listener.supervise()  # listening soon, then a round: what was queued meanwhile is not missed
        try:
            while not self._stopping:
                # Cleared before the round: a NOTIFY arriving during it starts the next one.
                self._wake.clear()
                sent = 0
                try:
                    sent = await deliver_pending(
                        self._pool,
                        self._mailer,
                        max_attempts=self._max_attempts,
                        batch=self._batch,
                        lease_seconds=self._lease_seconds,
                    )
                except _DB_ERRORS as exc:
                    log.warning("mail delivery round failed, retrying in %.0fs: %s", self._poll_interval, exc)
                except Exception:
                    log.exception("mail delivery round failed, retrying in %.0fs", self._poll_interval)
                if sent >= self._batch or self._stopping:
                    continue  # more may be due
                try:
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval)
                except TimeoutError:
                    pass
        finally:
            await self._listener.stop()

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._wake.set()

