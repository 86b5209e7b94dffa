"""The account page's profile form and the ``next`` check: messages next to fields, paths on this site."""

from __future__ import annotations

import pytest

from gatehouse import profiles
from gatehouse.profiles import ProfileError
from gatehouse.web.forms import ProfileForm, same_site_path


@pytest.mark.parametrize(
    ("data", "errors"),
    [
        ({"username": "ok_name", "website": "https://example.com"}, set()),
        ({"username": "a b c"}, {"username"}),
        ({"website": "ftp://example.com"}, {"website"}),
        ({"full_name": "x" * 101}, {"full_name"}),
    ],
)
def test_profile_form_rules(data: dict[str, str], errors: set[str]) -> None:
    assert set(ProfileForm.parse(data).errors) == errors


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (profiles.USERNAME_TAKEN, "That username is taken. Pick another."),
        (profiles.USERNAME_TOO_SHORT, "Use at least 3 characters."),
    ],
)
def test_a_refused_username_is_shown_next_to_its_field(code: str, message: str) -> None:
    form = ProfileForm(username="bobby")
    assert form.refused(ProfileError(code, "from the profile module")) is True
    assert form.errors == {"username": message}


@pytest.mark.parametrize("code", [profiles.PROFILE_FORBIDDEN, profiles.INVALID_PROFILE, profiles.PROFILES_MISSING])
def test_other_refusals_belong_to_no_field(code: str) -> None:
    form = ProfileForm(username="bobby")
    assert form.refused(ProfileError(code, "from the profile module")) is False
    assert form.errors == {}


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)",
                                    "http:/evil.example"])
def test_next_cannot_leave_the_site(target: str) -> None:
    assert same_site_path(target) == "/account"
    assert same_site_path("/account?tab=photo") == "/account?tab=photo"
