"""The package's public surface is deliberate: adding or removing a name is an API change."""

from __future__ import annotations

import gatehouse.mail


def test_exported_members() -> None:
    assert sorted(gatehouse.mail.__all__) == [
        "DeliveryAttempt",
        "KINDS",
        "MailDeliveryError",
        "Mailer",
        "MemoryMailer",
        "Message",
        "OutboxEntry",
        "OutboxSender",
        "SMTPMailer",
        "Templates",
        "deliver_pending",
        "delivery_log",
        "enqueue",
        "recent",
        "send_test_message",
    ]
    for name in gatehouse.mail.__all__:
        assert getattr(gatehouse.mail, name) is not None
