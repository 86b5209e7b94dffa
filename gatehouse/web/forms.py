"""The account page's profile form: checks that give a person a message next to the field."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gatehouse import profiles

USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")


#: What the form says next to the username when the database refuses it.
_REFUSALS = {
    profiles.USERNAME_TAKEN: "That username is taken. Pick another.",
    profiles.USERNAME_TOO_SHORT: "Use at least 3 characters.",
}


@dataclass
class ProfileForm:
    full_name: str = ""
    username: str = ""
    website: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: dict[str, str]) -> ProfileForm:
        form = cls(
            full_name=(data.get("full_name") or "").strip(),
            username=(data.get("username") or "").strip(),
            website=(data.get("website") or "").strip(),
        )
        if len(form.full_name) > 100:
            form.errors["full_name"] = "Use at most 100 characters."
        if form.username and not USERNAME.match(form.username):
            form.errors["username"] = (
                "Use 3 to 32 letters, digits, dots, dashes or underscores." if len(form.username) >= 3
                else "Use at least 3 characters."
            )
        if form.website:
            parts = urlsplit(form.website)
            if parts.scheme not in ("http", "https") or not parts.netloc or len(form.website) > 2000:
                form.errors["website"] = "Enter a full address starting with https:// (or http://)."
        return form

    def refused(self, error: profiles.ProfileError) -> bool:
        """Show the database's refusal next to its field; False if it belongs to none."""
        message = _REFUSALS.get(error.code)
        if message is None:
            return False
        self.errors["username"] = message
        return True

    def values(self) -> dict[str, str | None]:
        return {
            "full_name": self.full_name or None,
            "username": self.username or None,
            "website": self.website or None,
        }


def same_site_path(value: str | None, default: str = "/account") -> str:
    """``next`` may only be a path on this site: no scheme, no host, no ``//`` or ``\\`` tricks."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in value):
        return default
    return value
