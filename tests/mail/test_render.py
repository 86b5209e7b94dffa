"""Templates: every kind carries the link and the code in both parts; HTML escapes; overrides win."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import UndefinedError

from gatehouse.core.config import ConfigError, Settings
from gatehouse.mail import KINDS, Templates
from gatehouse.mail.render import human_duration

#: The kinds that carry a link and a code; reauthentication carries a code only.
ACTION_KINDS = [kind for kind in KINDS if kind not in ("test", "reauthentication")]
LINK = "https://app.example.com/auth/v1/verify?token=abc&type=signup&redirect_to=https%3A%2F%2Fapp.example.com"
CONTEXT = {"action_url": LINK, "token": "123456", "email": "alice@example.com", "new_email": "alice@new.example.com"}


@pytest.fixture(scope="module")
def templates(settings: Settings) -> Templates:
    return Templates(settings.model_copy(update={"site_url": "https://app.example.com", "otp_expiry": 3600}))


@pytest.mark.parametrize("kind", ACTION_KINDS)
def test_each_kind_has_link_and_code_in_both_parts(templates: Templates, kind: str) -> None:
    subject, text, html = templates.render(kind, **CONTEXT)

    assert subject and "\n" not in subject
    assert LINK in text
    assert "123456" in text
    assert "1 hour" in text
    # In HTML the link is an attribute and a visible fallback, & escaped as it must be.
    assert f'href="{LINK.replace("&", "&amp;")}"' in html
    assert "123456" in html
    assert html.lstrip().startswith("<!doctype html>")
    assert '<html lang="en">' in html
    assert "https://app.example.com" in text


def test_reauthentication_carries_the_code_and_no_link(templates: Templates) -> None:
    subject, text, html = templates.render("reauthentication", **CONTEXT)
    assert subject == "Confirm it is you: your code"
    assert "123456" in text and "123456" in html and "1 hour" in text
    assert LINK not in text and "href=\"" + LINK not in html


@pytest.mark.parametrize(
    ("kind", "subject"),
    [
        ("confirmation", "Confirm your email address"),
        ("recovery", "Reset your password"),
        ("magic_link", "Your sign-in link"),
        ("email_change", "Confirm your new email address"),
        ("invite", "You have been invited"),
    ],
)
def test_subjects(templates: Templates, kind: str, subject: str) -> None:
    assert templates.render(kind, **CONTEXT)[0] == subject


def test_email_change_names_both_addresses(templates: Templates) -> None:
    _, text, html = templates.render("email_change", **CONTEXT)
    for part in (text, html):
        assert "alice@example.com" in part and "alice@new.example.com" in part


def test_hostile_values_are_escaped_in_html_only(templates: Templates) -> None:
    hostile = {
        "action_url": 'https://x.example/"><script>alert(1)</script>',
        "token": "<b>1</b>",
        "email": "<img src=x onerror=alert(1)>@example.com",
        "new_email": "n@example.com",
    }
    _, text, html = templates.render("email_change", **hostile)

    assert "<script>" not in html and "<img" not in html and "<b>1</b>" not in html
    assert "&lt;script&gt;" in html
    assert 'href="https://x.example/&#34;&gt;&lt;script&gt;' in html
    assert "&lt;img src=x onerror=alert(1)&gt;@example.com" in html
    # The text part is text: shown as is, never interpreted.
    assert hostile["action_url"] in text and hostile["email"] in text


def test_message_builds_a_message_for_the_address(templates: Templates) -> None:
    message = templates.message("magic_link", "bob@example.com", action_url=LINK, token="654321")
    assert (message.to, message.kind, message.subject) == ("bob@example.com", "magic_link", "Your sign-in link")
    assert "bob@example.com" in message.text and "654321" in message.text
    assert message.html is not None and LINK.replace("&", "&amp;") in message.html


def test_missing_variable_fails_loudly(templates: Templates) -> None:
    with pytest.raises(UndefinedError):
        templates.render("confirmation", email="a@example.com", token="123456")


def test_bad_kind_is_refused(templates: Templates) -> None:
    with pytest.raises(ValueError):
        templates.render("../etc/passwd")


def test_override_folder_wins_file_by_file(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "confirmation.subject.txt").write_text("Welcome to {{ site_name }}, {{ email }}\n")
    (tmp_path / "_layout.html").write_text(
        '<html><body>{% block intro %}{% endblock %} BRAND <a href="{{ action_url }}">{{ token }}</a></body></html>'
    )
    templates = Templates(settings.model_copy(update={"mail_templates_dir": tmp_path, "smtp_sender_name": "Acme"}))

    subject, text, html = templates.render("confirmation", **CONTEXT)
    assert subject == "Welcome to Acme, alice@example.com"
    assert "BRAND" in html and "123456" in html  # the built-in confirmation.html, in the overriding layout
    assert LINK in text  # the text part is still the built-in one
    assert templates.render("recovery", **CONTEXT)[0] == "Reset your password"


def test_override_folder_must_exist(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GATEHOUSE_MAIL_TEMPLATES_DIR"):
        Templates(settings.model_copy(update={"mail_templates_dir": tmp_path / "missing"}))


@pytest.mark.parametrize(
    ("minutes", "text"),
    [(1, "1 minute"), (5, "5 minutes"), (60, "1 hour"), (90, "90 minutes"), (1440, "24 hours"), (10080, "7 days")],
)
def test_human_duration(minutes: int, text: str) -> None:
    assert human_duration(minutes) == text
