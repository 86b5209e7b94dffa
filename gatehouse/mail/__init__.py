"""Mail: the outbox (written with the change that needs it), the SMTP sender, templates, the dev inbox.

The development inbox routes live in ``gatehouse.mail.inbox`` (``routes``) and are mounted by
the app in development mode only.
"""

from __future__ import annotations

from gatehouse.mail.base import MailDeliveryError, Mailer, Message
from gatehouse.mail.memory import MemoryMailer
from gatehouse.mail.outbox import (
    DeliveryAttempt,
    OutboxEntry,
    OutboxSender,
    deliver_pending,
    delivery_log,
    enqueue,
    recent,
)
from gatehouse.mail.render import KINDS, Templates
from gatehouse.mail.service import send_test_message
from gatehouse.mail.smtp import SMTPMailer

__all__ = [
    "KINDS",
    "DeliveryAttempt",
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
