"""TOTP second factors over /auth/v1, as the upstream server speaks them; codes from pyotp."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pyotp
import pytest

from tests.auth.helpers import PASSWORD, Auth, claims, new_email
from tests.support import ConfirmedSession, RunningServer, once_served, run_sql


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})


@pytest.fixture
def auth(server: RunningServer) -> Iterator[Auth]:
    client = Auth(server)
    yield client
    client.close()


def enroll(auth: Auth, token: str, name: str | None = None) -> dict[str, Any]:
    body = {"factor_type": "totp", **({"friendly_name": name} if name else {})}
    response = auth.post("/factors", body, token=token)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def challenge(auth: Auth, token: str, factor_id: str) -> str:
    response = auth.post(f"/factors/{factor_id}/challenge", {}, token=token)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def verify(auth: Auth, token: str, factor_id: str, code: str, challenge_id: str | None = None) -> Any:
    challenge_id = challenge_id or challenge(auth, token, factor_id)
    return auth.post(f"/factors/{factor_id}/verify", {"challenge_id": challenge_id, "code": code}, token=token)


def code_at(secret: str, steps_from_now: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * steps_from_now)


def with_factor(auth: Auth, confirmed_session: ConfirmedSession, server: RunningServer) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    """A confirmed user with a verified TOTP factor: (email, factor, secret, the aal2 session)."""
    email, session = confirmed_session(server)
    factor = enroll(auth, session["access_token"], "phone")
    secret = factor["totp"]["secret"]
    raised = verify(auth, session["access_token"], factor["id"], code_at(secret))
    assert raised.status_code == 200, raised.text
    return email, factor, secret, raised.json()


def test_enrol_answers_the_secret_uri_and_qr_code(auth: Auth, server: RunningServer,
                                                  confirmed_session: ConfirmedSession, database_url: str) -> None:
    email, session = confirmed_session(server)
    factor = enroll(auth, session["access_token"], "my phone")
    assert factor["type"] == "totp" and factor["friendly_name"] == "my phone"
    totp = factor["totp"]
    assert totp["qr_code"].startswith("<svg xmlns=") and "data:" not in totp["qr_code"]
    parsed = pyotp.parse_uri(totp["uri"])
    assert parsed.secret == totp["secret"] and parsed.name == email and parsed.issuer == server.url.split("//")[1]
    listed = auth.get("/user", token=session["access_token"]).json()["factors"]
    assert [(f["id"], f["status"], f["factor_type"]) for f in listed] == [(factor["id"], "unverified", "totp")]
    stored = run_sql(database_url, "SELECT secret FROM auth.mfa_factors WHERE id = $1", uuid.UUID(factor["id"]))
    assert stored[0]["secret"].startswith("v1:") and totp["secret"] not in stored[0]["secret"]
    duplicate = auth.post("/factors", {"factor_type": "totp", "friendly_name": "my phone"},
                          token=session["access_token"])
    assert duplicate.status_code == 422 and duplicate.json()["error_code"] == "mfa_factor_name_conflict"


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"factor_type": "sms"}, 400, "validation_failed"),
    ({}, 400, "validation_failed"),
    ({"factor_type": "phone", "phone": "+15555550100"}, 422, "mfa_phone_enroll_not_enabled"),
    ({"factor_type": "totp", "friendly_name": "x" * 300}, 400, "validation_failed"),
    ({"factor_type": "totp", "issuer": "bad\nissuer"}, 400, "validation_failed"),
])
def test_enrol_refuses_bad_bodies(auth: Auth, server: RunningServer, confirmed_session: ConfirmedSession,
                                  body: dict[str, Any], status: int, code: str) -> None:
    _, session = confirmed_session(server)
    response = auth.post("/factors", body, token=session["access_token"])
    assert response.status_code == status and response.json()["error_code"] == code, response.text


def test_factors_need_a_signed_in_user(auth: Auth) -> None:
    assert auth.post("/factors", {"factor_type": "totp"}).status_code == 401
    assert auth.post(f"/factors/{uuid.uuid4()}/challenge", {}).status_code == 401
    assert auth.http.delete(f"/factors/{uuid.uuid4()}").status_code == 401


def test_verify_raises_the_session_to_aal2(auth: Auth, server: RunningServer,
                                           confirmed_session: ConfirmedSession) -> None:
    _, session = confirmed_session(server)
    assert claims(session["access_token"])["aal"] == "aal1"
    factor = enroll(auth, session["access_token"])
    challenged = auth.post(f"/factors/{factor['id']}/challenge", {}, token=session["access_token"]).json()
    assert challenged["type"] == "totp" and abs(challenged["expires_at"] - (time.time() + 300)) < 30
    raised = verify(auth, session["access_token"], factor["id"], code_at(factor["totp"]["secret"]), challenged["id"])
    assert raised.status_code == 200, raised.text
    body = raised.json()
    token_claims = claims(body["access_token"])
    assert token_claims["aal"] == "aal2" and token_claims["session_id"] == claims(session["access_token"])["session_id"]
    assert [entry["method"] for entry in token_claims["amr"]] == ["totp", "otp"]  # newest first, as upstream
    assert body["user"]["factors"][0]["status"] == "verified"
    # the session stays aal2 across refreshes
    refreshed = auth.post("/token?grant_type=refresh_token", {"refresh_token": body["refresh_token"]})
    assert claims(refreshed.json()["access_token"])["aal"] == "aal2"
    # a refresh token from before the second factor cannot refresh into aal2
    stale = auth.post("/token?grant_type=refresh_token", {"refresh_token": session["refresh_token"]})
    assert stale.status_code == 400


def test_codes_work_once_and_only_for_their_factor(auth: Auth, server: RunningServer,
                                                    confirmed_session: ConfirmedSession) -> None:
    _, factor, secret, raised = with_factor(auth, confirmed_session, server)
    token = raised["access_token"]
    replayed = verify(auth, token, factor["id"], code_at(secret))
    assert replayed.status_code == 422 and replayed.json()["error_code"] == "mfa_verification_failed"
    wrong = verify(auth, token, factor["id"], "000000" if code_at(secret, 1) != "000000" else "111111")
    assert wrong.status_code == 422 and wrong.json()["error_code"] == "mfa_verification_failed"
    for bad in ("12345", "1234567", "abcdef", ""):
        refused = verify(auth, token, factor["id"], bad)
        assert refused.status_code in (400, 422), bad
    # the next step's code (a phone a little ahead) is accepted, once
    assert verify(auth, token, factor["id"], code_at(secret, 1)).status_code == 200
    second = enroll(auth, token, "backup phone")  # at aal2 a second factor may be added
    other_code = code_at(secret, 1)
    crossed = verify(auth, token, second["id"], other_code)
    assert crossed.status_code == 422 and crossed.json()["error_code"] == "mfa_verification_failed"


def test_challenges_expire_and_belong_to_their_factor(auth: Auth, server: RunningServer,
                                                      confirmed_session: ConfirmedSession, database_url: str) -> None:
    _, factor, secret, raised = with_factor(auth, confirmed_session, server)
    token = raised["access_token"]
    old = challenge(auth, token, factor["id"])
    run_sql(database_url, "UPDATE auth.mfa_challenges SET created_at = now() - interval '6 minutes' WHERE id = $1",
            uuid.UUID(old))
    expired = verify(auth, token, factor["id"], code_at(secret, 1), old)
    assert expired.status_code == 422 and expired.json()["error_code"] == "mfa_challenge_expired"
    second = enroll(auth, token, "other")
    foreign = challenge(auth, token, second["id"])
    mixed = verify(auth, token, factor["id"], code_at(secret, 1), foreign)
    assert mixed.status_code == 422 and mixed.json()["error_code"] == "mfa_factor_not_found"
    for junk in ("not-a-uuid", str(uuid.uuid4())):
        refused = verify(auth, token, factor["id"], code_at(secret, 1), junk)
        assert refused.status_code == 422 and refused.json()["error_code"] == "mfa_factor_not_found"


def test_a_challenge_is_answered_from_the_address_that_asked(server: RunningServer,
                                                             confirmed_session: ConfirmedSession) -> None:
    here, there = Auth(server), Auth(server, source_ip="127.0.0.2")
    try:
        _, factor, secret, raised = with_factor(here, confirmed_session, server)
        asked = challenge(here, raised["access_token"], factor["id"])
        moved = verify(there, raised["access_token"], factor["id"], code_at(secret, 1), asked)
        assert moved.status_code == 422 and moved.json()["error_code"] == "mfa_ip_address_mismatch"
    finally:
        here.close()
        there.close()


def test_another_users_factor_is_not_found(auth: Auth, server: RunningServer,
                                           confirmed_session: ConfirmedSession) -> None:
    _, factor, secret, _ = with_factor(auth, confirmed_session, server)
    _, stranger = confirmed_session(server)
    token = stranger["access_token"]
    assert auth.post(f"/factors/{factor['id']}/challenge", {}, token=token).json()["error_code"] == "mfa_factor_not_found"
    refused = auth.post(f"/factors/{factor['id']}/verify", {"challenge_id": str(uuid.uuid4()), "code": code_at(secret)},
                        token=token)
    assert refused.status_code == 404 and refused.json()["error_code"] == "mfa_factor_not_found"
    gone = auth.http.delete(f"/factors/{factor['id']}", headers={"Authorization": f"Bearer {token}"})
    assert gone.status_code == 404


def test_aal1_cannot_add_or_remove_a_verified_factor(auth: Auth, server: RunningServer,
                                                     confirmed_session: ConfirmedSession) -> None:
    email, factor, _secret, raised = with_factor(auth, confirmed_session, server)
    password_only = auth.post("/token?grant_type=password", {"email": email, "password": PASSWORD}).json()
    assert claims(password_only["access_token"])["aal"] == "aal1"
    added = auth.post("/factors", {"factor_type": "totp", "friendly_name": "attacker"},
                      token=password_only["access_token"])
    assert added.status_code == 403 and added.json()["error_code"] == "insufficient_aal"
    removed = auth.http.delete(f"/factors/{factor['id']}",
                               headers={"Authorization": f"Bearer {password_only['access_token']}"})
    assert removed.status_code == 422 and removed.json()["error_code"] == "insufficient_aal"
    # at aal2 the factor goes, and the session that it raised returns to aal1
    gone = auth.http.delete(f"/factors/{factor['id']}", headers={"Authorization": f"Bearer {raised['access_token']}"})
    assert gone.status_code == 200 and gone.json() == {"id": factor["id"]}
    lowered = auth.post("/token?grant_type=refresh_token", {"refresh_token": raised["refresh_token"]}).json()
    assert claims(lowered["access_token"])["aal"] == "aal1" and "factors" not in lowered["user"]


def test_verifying_the_first_factor_ends_other_password_only_sessions(
    auth: Auth, server: RunningServer, confirmed_session: ConfirmedSession
) -> None:
    email, session = confirmed_session(server)
    elsewhere = auth.post("/token?grant_type=password", {"email": email, "password": PASSWORD}).json()
    factor = enroll(auth, session["access_token"])
    assert verify(auth, session["access_token"], factor["id"], code_at(factor["totp"]["secret"])).status_code == 200
    ended = auth.get("/user", token=elsewhere["access_token"])
    assert ended.status_code == 403 and ended.json()["error_code"] == "session_not_found"


def test_verification_attempts_are_limited_per_user_and_factor(
    server_factory: Callable[..., RunningServer], confirmed_session: ConfirmedSession
) -> None:
    limited = server_factory(env={"GATEHOUSE_RATE_LIMIT_MFA_VERIFY": "3/300"})
    auth = Auth(limited)
    try:
        _, session = confirmed_session(limited)
        factor = enroll(auth, session["access_token"])
        answers = [verify(auth, session["access_token"], factor["id"], "000001").status_code for _ in range(4)]
        assert answers == [422, 422, 422, 429]
        # another user's attempts on that factor id count against themselves, not against its owner
        _, stranger = confirmed_session(limited)
        for _ in range(4):
            auth.post(f"/factors/{factor['id']}/verify", {"challenge_id": str(uuid.uuid4()), "code": "000001"},
                      token=stranger["access_token"])
        _, other = confirmed_session(limited)
        own = enroll(auth, other["access_token"])
        assert verify(auth, other["access_token"], own["id"], code_at(own["totp"]["secret"])).status_code == 200
    finally:
        auth.close()


def test_admin_lists_and_deletes_a_users_factors(auth: Auth, server: RunningServer,
                                                 confirmed_session: ConfirmedSession) -> None:
    _, factor, _, raised = with_factor(auth, confirmed_session, server)
    user_id = raised["user"]["id"]
    admin = Auth(server, server.keys.secret_key)
    try:
        listed = admin.get(f"/admin/users/{user_id}/factors")
        assert listed.status_code == 200 and [f["id"] for f in listed.json()] == [factor["id"]]
        assert auth.get(f"/admin/users/{user_id}/factors", token=raised["access_token"]).status_code == 403
        deleted = admin.http.delete(f"/admin/users/{user_id}/factors/{factor['id']}")
        assert deleted.status_code == 200 and deleted.json()["id"] == factor["id"]
        assert admin.get(f"/admin/users/{user_id}/factors").json() == []
        again = admin.http.delete(f"/admin/users/{user_id}/factors/{factor['id']}")
        assert again.status_code == 404
        assert admin.get(f"/admin/users/{uuid.uuid4()}/factors").status_code == 404
    finally:
        admin.close()


def test_a_new_sign_in_needs_the_second_factor_again(auth: Auth, server: RunningServer,
                                                     confirmed_session: ConfirmedSession) -> None:
    email, factor, secret, _ = with_factor(auth, confirmed_session, server)
    fresh = auth.post("/token?grant_type=password", {"email": email, "password": PASSWORD}).json()
    assert claims(fresh["access_token"])["aal"] == "aal1"
    assert [f["status"] for f in fresh["user"]["factors"]] == ["verified"]  # next level: aal2
    raised = verify(auth, fresh["access_token"], factor["id"], code_at(secret, 1))
    assert claims(raised.json()["access_token"])["aal"] == "aal2"


def test_new_email_helper_is_unique() -> None:
    assert new_email() != new_email()


# -- RLS may require the second factor ---------------------------------------------------------

AAL2_SCHEMA = """
CREATE TABLE public.mfa_notes (id bigserial PRIMARY KEY, owner uuid NOT NULL DEFAULT auth.uid(), body text NOT NULL);
ALTER TABLE public.mfa_notes ENABLE ROW LEVEL SECURITY;
GRANT SELECT, INSERT ON public.mfa_notes TO authenticated;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO authenticated;
CREATE POLICY "owners read" ON public.mfa_notes FOR SELECT TO authenticated USING (owner = (SELECT auth.uid()));
CREATE POLICY "owners write" ON public.mfa_notes FOR INSERT TO authenticated WITH CHECK (owner = (SELECT auth.uid()));
-- restrictive: ANDed with every other policy, so no aal1 session passes whatever else allows it
CREATE POLICY "second factor passed" ON public.mfa_notes AS RESTRICTIVE TO authenticated
    USING ((SELECT auth.jwt() ->> 'aal') = 'aal2') WITH CHECK ((SELECT auth.jwt() ->> 'aal') = 'aal2');

INSERT INTO storage.buckets (id, name, public) VALUES ('mfa-vault', 'mfa-vault', false);
CREATE POLICY "vault owners read" ON storage.objects FOR SELECT TO authenticated
    USING (bucket_id = 'mfa-vault' AND (storage.foldername(name))[1] = (SELECT auth.uid())::text);
CREATE POLICY "vault owners write" ON storage.objects FOR INSERT TO authenticated
    WITH CHECK (bucket_id = 'mfa-vault' AND (storage.foldername(name))[1] = (SELECT auth.uid())::text);
CREATE POLICY "vault needs the second factor" ON storage.objects AS RESTRICTIVE TO authenticated
    USING (bucket_id <> 'mfa-vault' OR (SELECT auth.jwt() ->> 'aal') = 'aal2')
    WITH CHECK (bucket_id <> 'mfa-vault' OR (SELECT auth.jwt() ->> 'aal') = 'aal2');
NOTIFY gatehouse_schema, 'reload';
"""


def test_a_restrictive_policy_lets_only_aal2_sessions_in(
    auth: Auth, server: RunningServer, confirmed_session: ConfirmedSession, database_url: str
) -> None:
    import httpx

    run_sql(database_url, AAL2_SCHEMA)
    email, _factor, _secret, raised = with_factor(auth, confirmed_session, server)
    aal1 = auth.post("/token?grant_type=password", {"email": email, "password": PASSWORD}).json()
    user_id = raised["user"]["id"]

    def rest(token: str) -> httpx.Client:
        return httpx.Client(base_url=f"{server.url}/rest/v1", timeout=10, headers={
            "apikey": server.keys.publishable_key, "Authorization": f"Bearer {token}"})

    def storage(token: str) -> httpx.Client:
        return httpx.Client(base_url=f"{server.url}/storage/v1", timeout=10, headers={
            "apikey": server.keys.publishable_key, "Authorization": f"Bearer {token}"})

    with rest(raised["access_token"]) as strong, rest(aal1["access_token"]) as weak:
        once_served(lambda: strong.get("/mfa_notes"))
        wrote = strong.post("/mfa_notes", json={"body": "the launch codes"}, headers={"Prefer": "return=representation"})
        assert wrote.status_code == 201, wrote.text
        assert [row["body"] for row in strong.get("/mfa_notes").json()] == ["the launch codes"]
        assert weak.get("/mfa_notes").json() == []  # the same user, password only: nothing
        refused = weak.post("/mfa_notes", json={"body": "aal1 write"})
        assert refused.status_code == 403 and refused.json()["code"] == "42501"
    path = f"{user_id}/secret.txt"
    with storage(raised["access_token"]) as strong, storage(aal1["access_token"]) as weak:
        stored = strong.post(f"/object/mfa-vault/{path}", content=b"top secret", headers={"Content-Type": "text/plain"})
        assert stored.status_code == 200, stored.text
        assert strong.get(f"/object/mfa-vault/{path}").content == b"top secret"
        assert weak.get(f"/object/mfa-vault/{path}").status_code in (400, 404)
        assert weak.post(f"/object/mfa-vault/{user_id}/other.txt", content=b"x",
                         headers={"Content-Type": "text/plain"}).status_code in (400, 403)


# -- through supabase-py, unmodified ----------------------------------------------------------


def test_supabase_py_mfa(server: RunningServer, confirmed_session: ConfirmedSession) -> None:
    from supabase import create_client

    email, _ = confirmed_session(server)
    supabase = create_client(server.url, server.keys.publishable_key)
    try:
        supabase.auth.sign_in_with_password({"email": email, "password": PASSWORD})
        level = supabase.auth.mfa.get_authenticator_assurance_level()
        assert (level.current_level, level.next_level) == ("aal1", "aal1")
        enrolled = supabase.auth.mfa.enroll({"factor_type": "totp", "friendly_name": "py phone"})
        assert enrolled.totp is not None and enrolled.totp.qr_code.startswith("data:image/svg+xml;utf-8,<svg")
        secret = enrolled.totp.secret
        challenged = supabase.auth.mfa.challenge({"factor_id": enrolled.id})
        supabase.auth.mfa.verify({"factor_id": enrolled.id, "challenge_id": challenged.id, "code": code_at(secret)})
        level = supabase.auth.mfa.get_authenticator_assurance_level()
        assert (level.current_level, level.next_level) == ("aal2", "aal2")
        assert next(m.method for m in level.current_authentication_methods) == "totp"
        factors = supabase.auth.mfa.list_factors()
        assert [f.id for f in factors.totp] == [enrolled.id]
        supabase.auth.mfa.challenge_and_verify({"factor_id": enrolled.id, "code": code_at(secret, 1)})
        supabase.auth.mfa.unenroll({"factor_id": enrolled.id})
        assert supabase.auth.mfa.list_factors().all == []
        # signed in again with the password only, the client sees what it must still do
        supabase.auth.sign_out()
        supabase.auth.sign_in_with_password({"email": email, "password": PASSWORD})
        level = supabase.auth.mfa.get_authenticator_assurance_level()
        assert (level.current_level, level.next_level) == ("aal1", "aal1")
    finally:
        supabase.auth.close()
        supabase.auth.admin.close()
