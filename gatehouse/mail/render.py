"""Email templates: Jinja files with a subject, a text part and an HTML part per kind.

For a kind ``k`` the files are ``k.subject.txt``, ``k.txt`` and ``k.html``; the built-in ones
extend ``_layout.txt`` / ``_layout.html``. A file of the same name in
``GATEHOUSE_MAIL_TEMPLATES_DIR`` wins over the built-in one, so one can override a single
subject, one kind, or only the layout (and so every kind). Only ``.html`` files are
autoescaped: the text part and the subject are plain text, not markup.

Every kind carrying an action has both ``action_url`` (the link) and ``token`` (the 6-digit
code), since a person may open the email on another device than the one signing in.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, StrictUndefined, select_autoescape

from gatehouse.core.config import ConfigError, Settings
from gatehouse.mail.base import Message

#: The kinds the built-in templates cover. An override folder may add its own.
KINDS = ("confirmation", "recovery", "magic_link", "email_change", "invite", "existing_account", "reauthentication", "test")

_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


def human_duration(minutes: int) -> str:
    """``1440`` → ``24 hours``: what a person reads in "the link expires in ..."."""
    if minutes % 1440 == 0 and minutes >= 2880:
        count, unit = minutes // 1440, "day"
    elif minutes % 60 == 0:
        count, unit = minutes // 60, "hour"
    else:
        count, unit = minutes, "minute"
    return f"{count} {unit}{'' if count == 1 else 's'}"


class Templates:
    def __init__(self, settings: Settings) -> None:
        loaders: list[Any] = []
        folder = settings.mail_templates_dir
        if folder is not None:
            if not folder.is_dir():
                raise ConfigError(f"GATEHOUSE_MAIL_TEMPLATES_DIR: {folder} does not exist or is not a folder")
            loaders.append(FileSystemLoader(folder))
        loaders.append(PackageLoader("gatehouse.mail", "templates"))
        self._env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(enabled_extensions=("html", "htm"), default_for_string=False, default=False),
            # A template naming a variable nobody passes fails loudly instead of mailing a blank link.
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._defaults: dict[str, Any] = {
            "site_url": settings.public_site_url,
            "site_name": settings.smtp_sender_name,
            "expires_in_minutes": settings.otp_expiry // 60,
        }

    def render(self, kind: str, **context: Any) -> tuple[str, str, str]:
        """Render one kind: ``(subject, text, html)``.

        ``site_url``, ``site_name`` and ``expires_in_minutes`` default from the settings;
        ``expires_in`` ("24 hours") is derived from ``expires_in_minutes``.
        """
        if not _KIND.match(kind):
            raise ValueError(f"bad mail template kind {kind!r}")
        values = {**self._defaults, **context}
        values.setdefault("expires_in", human_duration(int(values["expires_in_minutes"])))
        subject = self._env.get_template(f"{kind}.subject.txt").render(values)
        text = self._env.get_template(f"{kind}.txt").render(values)
        html = self._env.get_template(f"{kind}.html").render(values)
        return " ".join(subject.split()), _tidy_text(text), html

    def message(self, kind: str, to: str, *, user_id: uuid.UUID | None = None, **context: Any) -> Message:
        """A rendered Message for ``to``; ``email`` defaults to ``to``."""
        context.setdefault("email", to)
        subject, text, html = self.render(kind, **context)
        return Message(to=to, subject=subject, text=text, html=html, kind=kind, user_id=user_id)


def _tidy_text(text: str) -> str:
    """At most one blank line in a row, and a final newline: template blocks leave gaps."""
    return re.sub(r"\n{3,}", "\n\n", text.strip()) + "\n"
