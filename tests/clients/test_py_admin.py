"""supabase-py's admin calls whose answers the client validates strictly."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import jwt
import pytest
from supabase import create_client

from tests.support import RunningServer


@pytest.mark.parametrize("link_type", ["email_change_current", "email_change_new"])
def test_generate_link_for_an_email_change_echoes_the_type(live: RunningServer, link_type: str) -> None:
    admin_client = create_client(live.url, live.keys.secret_key)
    try:
        admin = admin_client.auth.admin
        email = f"change-{uuid.uuid4().hex[:10]}@example.com"
        new_email = f"new-{uuid.uuid4().hex[:10]}@example.com"
        admin.create_user({"email": email, "password": "a long passphrase 4 tests", "email_confirm": True})
        link = admin.generate_link({"type": link_type, "email": email, "new_email": new_email})
        assert link.properties.verification_type == link_type
        assert "type=email_change" in link.properties.action_link
        assert len(link.properties.email_otp) == 6
    finally:
        admin_client.auth.close()


def test_tokens_name_the_api_not_the_app_as_issuer(server_factory: Callable[..., RunningServer]) -> None:
    """The tutorial's Next.js app on :3000 is the site URL; the issuer stays the API's own URL."""
    server = server_factory(env={"GATEHOUSE_SITE_URL": "http://localhost:3000",
                                 "GATEHOUSE_RATE_LIMITS_ENABLED": "false"})
    client = create_client(server.url, server.keys.publishable_key)
    try:
        email = f"iss-{uuid.uuid4().hex[:10]}@example.com"
        admin = create_client(server.url, server.keys.secret_key)
        admin.auth.admin.create_user({"email": email, "password": "a long passphrase 4 tests", "email_confirm": True})
        admin.auth.close()
        session = client.auth.sign_in_with_password({"email": email, "password": "a long passphrase 4 tests"}).session
        assert session is not None
        claims = jwt.decode(session.access_token, options={"verify_signature": False})
        assert claims["iss"] == f"{server.url}/auth/v1"
    finally:
        client.auth.close()
