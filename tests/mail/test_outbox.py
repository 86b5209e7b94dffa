"""The outbox against a real PostgreSQL and a real SMTP server: never lost, never sent twice."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from gatehouse.core.config import Settings
from gatehouse.core.db import Database
from gatehouse.core.embedded import free_port
from gatehouse.mail import (
    MailDeliveryError,
    MemoryMailer,
    Message,
    OutboxSender,
    SMTPMailer,
    deliver_pending,
    delivery_log,
    enqueue,
    recent,
)
from gatehouse.mail.outbox import CHANNEL, RETRY_CAP, claim_next, retry_delay
from tests.mail.conftest import SMTPServer, smtp_settings


@pytest.fixture(autouse=True)
async def empty_outbox(db: Database) -> None:
    await db.admin.execute("TRUNCATE gatehouse.mail_outbox CASCADE")


def message(n: int = 1, to: str | None = None, **fields: Any) -> Message:
    return Message(to=to or f"user{n}@example.com", subject=f"message {n}", text=f"text {n}", kind="test", **fields)


async def queue(db: Database, *messages: Message) -> list[int]:
    async with db.admin.acquire() as conn, conn.transaction():
        return [await enqueue(conn, m) for m in messages]


async def row(db: Database, outbox_id: int) -> dict[str, Any]:
    record = await db.admin.fetchrow(
        "SELECT *, next_attempt_at > now() AS waiting FROM gatehouse.mail_outbox WHERE id = $1", outbox_id
    )
    assert record is not None
    return dict(record)


async def make_due(db: Database) -> None:
    """Move every retry to now, instead of sleeping through the back-off."""
    await db.admin.execute("UPDATE gatehouse.mail_outbox SET next_attempt_at = now() WHERE status = 'pending'")


async def new_user(db: Database, conn: asyncpg.Connection) -> uuid.UUID:
    user_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO auth.users (id, aud, role, email) VALUES ($1, 'authenticated', 'authenticated', $2)",
        user_id,
        f"{user_id}@example.com",
    )
    return user_id


@pytest.fixture
async def notifications(db: Database) -> AsyncIterator[asyncio.Queue[str]]:
    received: asyncio.Queue[str] = asyncio.Queue()
    conn = await db.admin.acquire()
    callback = lambda *args: received.put_nowait(args[2])
    await conn.add_listener(CHANNEL, callback)
    yield received
    await conn.remove_listener(CHANNEL, callback)
    await db.admin.release(conn)


# --- enqueue: in the caller's transaction ---------------------------------------------------


async def test_mail_commits_with_the_change(db: Database, notifications: asyncio.Queue[str]) -> None:
    async with db.admin.acquire() as conn, conn.transaction():
        user_id = await new_user(db, conn)
        outbox_id = await enqueue(conn, message(to="new@example.com", user_id=user_id))

    stored = await row(db, outbox_id)
    assert stored["status"] == "pending"
    assert (stored["to_address"], stored["user_id"], stored["attempts"]) == ("new@example.com", user_id, 0)
    assert await asyncio.wait_for(notifications.get(), 2) == CHANNEL


async def test_rolled_back_change_leaves_no_mail_and_no_wake_up(
    db: Database, notifications: asyncio.Queue[str]
) -> None:
    with pytest.raises(RuntimeError):
        async with db.admin.acquire() as conn, conn.transaction():
            await new_user(db, conn)
            await enqueue(conn, message())
            raise RuntimeError("the change failed")

    assert await db.admin.fetchval("SELECT count(*) FROM gatehouse.mail_outbox") == 0
    # Notifications arrive in commit order: had the rolled-back one been sent, it would come first.
    await queue(db, message(2))
    await asyncio.wait_for(notifications.get(), 2)
    assert notifications.empty()


async def test_deleting_the_user_keeps_the_mail(db: Database) -> None:
    async with db.admin.acquire() as conn, conn.transaction():
        user_id = await new_user(db, conn)
        outbox_id = await enqueue(conn, message(user_id=user_id))
    await db.admin.execute("DELETE FROM auth.users WHERE id = $1", user_id)
    assert (await row(db, outbox_id))["user_id"] is None


# --- delivery ---------------------------------------------------------------------------


async def test_delivered_exactly_once(db: Database, settings: Settings, smtp: SMTPServer) -> None:
    ids = await queue(db, message(1), message(2), message(3))
    mailer = SMTPMailer(smtp_settings(settings, smtp.port))

    assert await deliver_pending(db.admin, mailer, max_attempts=3) == 3
    assert await deliver_pending(db.admin, mailer, max_attempts=3) == 0

    assert sorted(r.email["Subject"] for r in smtp.received) == ["message 1", "message 2", "message 3"]
    for outbox_id in ids:
        stored = await row(db, outbox_id)
        assert (stored["status"], stored["attempts"], stored["last_error"]) == ("sent", 1, None)
        assert stored["sent_at"] is not None and stored["locked_until"] is None
        [attempt] = await delivery_log(db.admin, outbox_id)
        assert attempt.ok and attempt.response.startswith("250 2.0.0 Ok: queued as Q")


async def test_message_id_is_the_rows_own(db: Database, settings: Settings, smtp: SMTPServer) -> None:
    [outbox_id] = await queue(db, message())
    await deliver_pending(db.admin, SMTPMailer(smtp_settings(settings, smtp.port)), max_attempts=3)
    stored = await row(db, outbox_id)
    assert smtp.received[0].email["Message-ID"] == f"<{stored['message_id']}@gatehouse.test>"


async def test_concurrent_senders_never_send_a_message_twice(
    db: Database, database_url: str, settings: Settings, smtp: SMTPServer
) -> None:
    smtp.collector.delay = 0.002  # each send yields, so the senders interleave
    await queue(db, *(message(n) for n in range(40)))
    mailer = SMTPMailer(smtp_settings(settings, smtp.port))
    # Two more pools stand in for two more processes.
    pools = [db.admin] + [await asyncpg.create_pool(database_url, min_size=1, max_size=2) for _ in range(2)]
    try:
        rounds = []
        while not rounds or any(rounds[-1]):
            rounds.append(await asyncio.gather(*(deliver_pending(p, mailer, max_attempts=3, batch=50) for p in pools)))
    finally:
        for pool in pools[1:]:
            await pool.close()

    subjects = [r.email["Subject"] for r in smtp.received]
    assert sum(map(sum, rounds)) == 40
    assert all(rounds[0]), rounds  # every sender took its share: they did run side by side
    assert sorted(subjects) == sorted(f"message {n}" for n in range(40))  # each once
    assert await db.admin.fetchval("SELECT count(*) FROM gatehouse.mail_attempts") == 40
    assert await db.admin.fetchval("SELECT count(*) FROM gatehouse.mail_outbox WHERE status <> 'sent'") == 0


async def test_server_down_then_back_delivers_each_message_once(
    db: Database, settings: Settings, smtp_server: Callable[..., SMTPServer]
) -> None:
    port = free_port()
    first, second = await queue(db, message(1), message(2))
    mailer = SMTPMailer(smtp_settings(settings, port))

    assert await deliver_pending(db.admin, mailer, max_attempts=3) == 0
    stored = await row(db, first)
    assert stored["status"] == "pending" and stored["waiting"]
    assert stored["attempts"] == 0  # an outage does not count against the message
    assert f"could not connect to 127.0.0.1:{port}" in stored["last_error"]
    [failure] = await delivery_log(db.admin, first)
    assert not failure.ok and "could not connect" in failure.response
    # The round stopped at the outage: the second message was not even tried.
    assert await delivery_log(db.admin, second) == []

    server = smtp_server(port=port)
    assert await deliver_pending(db.admin, mailer, max_attempts=3) == 1  # only the second is due
    await make_due(db)
    assert await deliver_pending(db.admin, mailer, max_attempts=3) == 1
    assert await deliver_pending(db.admin, mailer, max_attempts=3) == 0

    assert sorted(r.email["Subject"] for r in server.received) == ["message 1", "message 2"]
    assert [a.ok for a in await delivery_log(db.admin, first)] == [False, True]
    assert [a.ok for a in await delivery_log(db.admin, second)] == [True]


async def test_a_long_outage_never_gives_mail_up(db: Database, settings: Settings) -> None:
    [outbox_id] = await queue(db, message())
    mailer = SMTPMailer(smtp_settings(settings, free_port()))
    for _ in range(3):
        await deliver_pending(db.admin, mailer, max_attempts=1)
        await make_due(db)
    stored = await row(db, outbox_id)
    assert (stored["status"], stored["attempts"]) == ("pending", 0)
    assert len(await delivery_log(db.admin, outbox_id)) == 3


async def test_refused_message_fails_after_max_attempts(db: Database, settings: Settings, smtp: SMTPServer) -> None:
    refused, fine = await queue(db, message(1, to="refuse-me@example.com"), message(2))
    mailer = SMTPMailer(smtp_settings(settings, smtp.port))

    # A refusal does not stop the round: the next message still goes out.
    assert await deliver_pending(db.admin, mailer, max_attempts=3) == 1
    assert (await row(db, fine))["status"] == "sent"
    stored = await row(db, refused)
    assert (stored["status"], stored["attempts"], stored["waiting"]) == ("pending", 1, True)
    assert stored["last_error"].startswith("550 5.1.1")

    await make_due(db)
    await deliver_pending(db.admin, mailer, max_attempts=3)
    assert (await row(db, refused))["attempts"] == 2
    await make_due(db)
    await deliver_pending(db.admin, mailer, max_attempts=3)

    stored = await row(db, refused)
    assert (stored["status"], stored["attempts"]) == ("failed", 3)
    assert [a.ok for a in await delivery_log(db.admin, refused)] == [False, False, False]
    await make_due(db)
    assert await deliver_pending(db.admin, mailer, max_attempts=3) == 0
    assert len(await delivery_log(db.admin, refused)) == 3
    assert [r.email["Subject"] for r in smtp.received] == ["message 2"]


async def test_back_off_grows_between_refusals(db: Database) -> None:
    [outbox_id] = await queue(db, message())
    mailer = MemoryMailer()
    waits = []
    for _ in range(3):
        mailer.fail(1, refused=True)
        await deliver_pending(db.admin, mailer, max_attempts=10)
        waits.append(
            await db.admin.fetchval(
                "SELECT extract(epoch FROM next_attempt_at - now()) FROM gatehouse.mail_outbox WHERE id = $1", outbox_id
            )
        )
        await make_due(db)
    assert 1.4 < waits[0] <= 2.0 and 2.9 < waits[1] <= 4.0 and 5.9 < waits[2] <= 8.0


def test_retry_delay_doubles_up_to_the_cap_with_downward_jitter() -> None:
    assert [retry_delay(n, rand=lambda: 0.0) for n in (1, 2, 3, 10)] == [2.0, 4.0, 8.0, RETRY_CAP]
    assert retry_delay(3, rand=lambda: 1.0) == 6.0
    assert retry_delay(10_000, rand=lambda: 0.0) == RETRY_CAP


async def test_memory_mailer_failing_twice_then_delivering(db: Database) -> None:
    [outbox_id] = await queue(db, message())
    mailer = MemoryMailer()
    mailer.fail(2)
    for _ in range(3):
        await deliver_pending(db.admin, mailer, max_attempts=1)
        await make_due(db)
    assert [m.subject for m in mailer.sent] == ["message 1"]
    assert mailer.attempts == 3
    assert (await row(db, outbox_id))["status"] == "sent"


async def test_unexpected_mailer_error_counts_as_a_refusal(db: Database) -> None:
    class Broken:
        async def send(self, message: Message) -> str:
            raise RuntimeError("boom")

    [outbox_id] = await queue(db, message())
    logging.getLogger("gatehouse.mail").disabled = True  # the traceback is expected
    try:
        await deliver_pending(db.admin, Broken(), max_attempts=1)
    finally:
        logging.getLogger("gatehouse.mail").disabled = False
    stored = await row(db, outbox_id)
    assert (stored["status"], stored["last_error"]) == ("failed", "RuntimeError: boom")


# --- leases -----------------------------------------------------------------------------


async def test_claimed_message_is_not_claimed_again_while_its_lease_runs(db: Database) -> None:
    [outbox_id] = await queue(db, message())
    claim = await claim_next(db.admin, lease_seconds=60)
    assert claim is not None and claim.id == outbox_id
    stored = await row(db, outbox_id)
    assert stored["status"] == "sending" and stored["locked_until"] is not None

    mailer = MemoryMailer()
    assert await deliver_pending(db.admin, mailer, max_attempts=3) == 0
    assert mailer.sent == []


async def test_expired_lease_makes_the_message_claimable_again(
    db: Database, settings: Settings, smtp: SMTPServer
) -> None:
    [outbox_id] = await queue(db, message())
    assert await claim_next(db.admin, lease_seconds=60) is not None  # a sender that then died
    await db.admin.execute("UPDATE gatehouse.mail_outbox SET locked_until = now() - interval '1 second'")

    mailer = SMTPMailer(smtp_settings(settings, smtp.port))
    assert await deliver_pending(db.admin, mailer, max_attempts=3) == 1
    assert await deliver_pending(db.admin, mailer, max_attempts=3) == 0
    assert len(smtp.received) == 1
    assert (await row(db, outbox_id))["status"] == "sent"


class GatedMailer:
    """Holds each send until released, then fails it as an outage: a sender outliving its lease."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, message: Message) -> str:
        self.entered.set()
        await self.release.wait()
        raise MailDeliveryError("connection lost")


async def test_a_sender_that_outlived_its_lease_cannot_undo_the_delivery(db: Database) -> None:
    [outbox_id] = await queue(db, message())
    slow = GatedMailer()
    stale = asyncio.create_task(deliver_pending(db.admin, slow, max_attempts=3, lease_seconds=60))
    await asyncio.wait_for(slow.entered.wait(), 2)

    await db.admin.execute("UPDATE gatehouse.mail_outbox SET locked_until = now() - interval '1 second'")
    fast = MemoryMailer()
    assert await deliver_pending(db.admin, fast, max_attempts=3) == 1

    slow.release.set()
    assert await stale == 0
    stored = await row(db, outbox_id)
    assert (stored["status"], stored["attempts"]) == ("sent", 1)
    # Both attempts are in the log, the stale one as the failure it was.
    assert sorted(a.ok for a in await delivery_log(db.admin, outbox_id)) == [False, True]


class SlowMailer(MemoryMailer):
    """Holds each send until released, then delivers it: a server slower than the lease."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, message: Message) -> str:
        self.entered.set()
        await self.release.wait()
        return await super().send(message)


async def test_a_send_longer_than_the_lease_keeps_its_message(db: Database) -> None:
    """The lease is renewed while the send lasts: no other sender takes the message over."""
    [outbox_id] = await queue(db, message())
    slow = SlowMailer()
    sending = asyncio.create_task(deliver_pending(db.admin, slow, max_attempts=3, lease_seconds=0.3))
    await asyncio.wait_for(slow.entered.wait(), 2)
    other = MemoryMailer()
    for _ in range(4):  # past the lease several times over
        await asyncio.sleep(0.3)
        assert await deliver_pending(db.admin, other, max_attempts=3) == 0
    slow.release.set()
    assert await sending == 1
    assert other.attempts == 0 and len(slow.sent) == 1
    stored = await row(db, outbox_id)
    assert (stored["status"], stored["attempts"], stored["locked_until"]) == ("sent", 1, None)


# --- the background sender --------------------------------------------------------------


async def test_sender_wakes_on_notify(db: Database, settings: Settings, smtp: SMTPServer) -> None:
    sender = OutboxSender(db.admin, SMTPMailer(smtp_settings(settings, smtp.port)), max_attempts=3, poll_interval=60)
    await sender.start()
    try:
        await smtp.wait_for(0)
        await queue(db, message(1))
        # The poll is a minute away: only the NOTIFY can deliver this within the timeout.
        await smtp.wait_for(1, timeout=5)
        await queue(db, message(2), message(3))
        received = await smtp.wait_for(3, timeout=5)
    finally:
        await sender.stop()
    assert not sender.running
    assert sorted(r.email["Subject"] for r in received) == ["message 1", "message 2", "message 3"]


async def test_sender_polls_for_retries(db: Database) -> None:
    mailer = MemoryMailer()
    mailer.fail(1)
    await queue(db, message())
    sender = OutboxSender(db.admin, mailer, max_attempts=3, poll_interval=0.02)
    await sender.start()
    try:
        await asyncio.wait_for(_until(lambda: mailer.attempts >= 1), 5)
        await make_due(db)  # the back-off has passed
        await asyncio.wait_for(_until(lambda: len(mailer.sent) == 1), 5)
    finally:
        await sender.stop()


async def test_sender_survives_an_unreachable_database(caplog: pytest.LogCaptureFixture) -> None:
    pool = await asyncpg.create_pool(f"postgresql://nobody:x@127.0.0.1:{free_port()}/none", min_size=0, max_size=1)
    sender = OutboxSender(pool, MemoryMailer(), max_attempts=3, poll_interval=0.02)
    try:
        with caplog.at_level(logging.WARNING, logger="gatehouse.mail"):
            await sender.start()
            failed = lambda: sum("mail delivery round failed" in r.getMessage() for r in caplog.records)
            await asyncio.wait_for(_until(lambda: failed() >= 3), 5)
            assert sender.running
            await sender.stop()
    finally:
        await pool.close()
    assert not sender.running


async def test_stop_is_idempotent_and_start_twice_is_one_task(db: Database) -> None:
    sender = OutboxSender(db.admin, MemoryMailer(), max_attempts=3, poll_interval=60)
    await sender.stop()
    await sender.start()
    await sender.start()
    assert sender.running
    await sender.stop()
    await sender.stop()
    assert not sender.running


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


# --- reading the outbox -------------------------------------------------------------------


async def test_recent_is_newest_first_and_filters_by_address(db: Database) -> None:
    await queue(
        db, message(1, to="Alice@Example.com"), message(2, to="bob@example.com"), message(3, to="alice@example.com")
    )
    assert [e.subject for e in await recent(db.admin)] == ["message 3", "message 2", "message 1"]
    assert [e.subject for e in await recent(db.admin, 2)] == ["message 3", "message 2"]
    assert [e.subject for e in await recent(db.admin, to="ALICE@example.com")] == ["message 3", "message 1"]
