"""Writes, functions and row-level security over the wire."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.rest.conftest import Rest
from tests.support import RunningServer, once_served, run_sql

UserFactory = Callable[[], tuple[Rest, dict[str, object]]]
REPRESENTATION = {"Prefer": "return=representation"}


def test_insert_single_and_bulk(user_factory: UserFactory) -> None:
    rest, _ = user_factory()
    one = rest.http.post("/countries", json={"name": "Chile", "code": "CL"}, headers=REPRESENTATION)
    assert one.status_code == 201
    (row,) = one.json()
    assert row["name"] == "Chile" and row["tags"] == [] and row["meta"] == {}  # defaults applied
    minimal = rest.http.post("/countries", json={"name": "Peru"})
    assert minimal.status_code == 201 and minimal.content == b""
    bulk = rest.http.post("/countries", params={"columns": '"name","code"', "select": "name"},
                          json=[{"name": "Ghana", "code": "GH"}, {"name": "Kenya"}], headers=REPRESENTATION)
    assert bulk.json() == [{"name": "Ghana"}, {"name": "Kenya"}]
    located = rest.http.post("/countries", json={"name": "Mali"}, headers={"Prefer": "return=headers-only"})
    assert located.status_code == 201 and located.headers["location"].startswith("/countries?id=eq.")


def test_missing_default(user_factory: UserFactory) -> None:
    rest, _ = user_factory()
    rows = [{"name": "Oman", "tags": ["asia"]}, {"name": "Chad"}]
    nulls = rest.http.post("/countries", json=rows, headers=REPRESENTATION)
    assert nulls.status_code == 400  # tags is NOT NULL: the absent key became NULL
    defaults = rest.http.post("/countries", json=rows, headers={"Prefer": "return=representation,missing=default"})
    assert defaults.status_code == 201
    assert sorted((r["name"], r["tags"]) for r in defaults.json()) == [("Chad", []), ("Oman", ["asia"])]


def test_upsert(user_factory: UserFactory) -> None:
    rest, _ = user_factory()
    rest.http.post("/countries", json={"name": "Fiji", "code": "XX"})
    merged = rest.http.post("/countries", params={"on_conflict": "name"}, json={"name": "Fiji", "code": "FJ"},
                            headers={"Prefer": "return=representation,resolution=merge-duplicates"})
    assert merged.status_code == 201 and merged.json()[0]["code"] == "FJ"
    ignored = rest.http.post("/countries", params={"on_conflict": "name"}, json={"name": "Fiji", "code": "ZZ"},
                             headers={"Prefer": "return=representation,resolution=ignore-duplicates"})
    assert ignored.json() == []
    duplicate = rest.http.post("/countries", json={"name": "Fiji"})
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "23505"


def test_update_and_delete_with_filters(user_factory: UserFactory) -> None:
    rest, _ = user_factory()
    rest.http.post("/countries", json={"name": "Laos", "population": 1})
    updated = rest.http.patch("/countries", params={"name": "eq.Laos"}, json={"population": 7500000},
                              headers=REPRESENTATION)
    assert updated.status_code == 200 and updated.json()[0]["population"] == 7500000
    quiet = rest.http.patch("/countries", params={"name": "eq.Laos"}, json={"code": "LA"})
    assert quiet.status_code == 204
    deleted = rest.http.delete("/countries", params={"name": "eq.Laos", "select": "name"}, headers=REPRESENTATION)
    assert deleted.json() == [{"name": "Laos"}]
    assert rest.http.get("/countries", params={"name": "eq.Laos"}).json() == []


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_unfiltered_writes_are_refused(service: Rest, method: str) -> None:
    response = service.http.request(method, "/cities", json={"rank": 1} if method == "PATCH" else None)
    assert response.status_code == 400 and response.json()["code"] == "21000"
    assert len(service.http.get("/cities").json()) == 6


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ('{"name": "X", "nope": 1}', "PGRST204"),
        ("{not json", "PGRST102"),
        ("42", "PGRST102"),
        ('[{"name": "A"}, 7]', "PGRST102"),
        ('{"name": "Y", "population": "many"}', "22P02"),
        ('{"name": null}', "23502"),
    ],
)
def test_bad_bodies(user_factory: UserFactory, body: str, code: str) -> None:
    rest, _ = user_factory()
    response = rest.http.post("/countries", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code


def test_check_violation_is_400_with_postgres_message(user_factory: UserFactory) -> None:
    rest, _ = user_factory()
    response = rest.http.post("/cities", json={"name": "Nowhere", "rank": 0})
    assert response.status_code == 400
    assert response.json()["code"] == "23514" and "cities_rank_check" in response.json()["message"]


def test_anon_cannot_write(anon: Rest) -> None:
    response = anon.http.post("/countries", json={"name": "Anonland"})
    assert response.status_code == 401 and response.json()["code"] == "42501"


def test_rls_hides_and_protects_other_users_rows(user_factory: UserFactory, anon: Rest) -> None:
    alice, alice_session = user_factory()
    bob, _ = user_factory()
    secret = alice.http.post("/notes", json={"body": "alice's secret"}, headers=REPRESENTATION).json()[0]
    public = alice.http.post("/notes", json={"body": "hello", "private": False}, headers=REPRESENTATION).json()[0]
    assert secret["owner"] == alice_session["user"]["id"]  # type: ignore[index]

    assert [n["body"] for n in bob.http.get("/notes", params={"order": "id"}).json()] == ["hello"]
    assert [n["body"] for n in anon.http.get("/notes").json()] == ["hello"]
    # bob's writes to alice's rows touch nothing; inserting as alice is refused
    assert bob.http.patch("/notes", params={"id": f"eq.{public['id']}"}, json={"body": "bob"},
                          headers=REPRESENTATION).json() == []
    assert bob.http.delete("/notes", params={"id": f"eq.{secret['id']}"}, headers=REPRESENTATION).json() == []
    forged = bob.http.post("/notes", json={"body": "x", "owner": alice_session["user"]["id"]})  # type: ignore[index]
    assert forged.status_code == 403 and forged.json()["code"] == "42501"
    assert "row-level security" in forged.json()["message"]
    assert alice.http.get("/notes", params={"id": f"eq.{secret['id']}"}).json()[0]["body"] == "alice's secret"


def test_service_role_bypasses_rls(user_factory: UserFactory, service: Rest) -> None:
    alice, _ = user_factory()
    alice.http.post("/notes", json={"body": "only alice"})
    assert "only alice" in [n["body"] for n in service.http.get("/notes").json()]


def test_expired_or_forged_token(rest_server: object, anon: Rest) -> None:
    import time

    keys = anon.server.keys
    expired = keys.sign({"sub": "x", "role": "authenticated", "aud": "authenticated", "exp": int(time.time()) - 1})
    response = anon.http.get("/countries", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401 and response.json()["code"] == "PGRST303"
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    forged = anon.http.get("/countries", headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJyb2xlIjoic2VydmljZV9yb2xlIn0."})
    assert forged.status_code == 401 and forged.json()["code"] == "PGRST301"
    bad_role = keys.sign({"role": "postgres", "exp": int(time.time()) + 60})
    assert anon.http.get("/countries", headers={"Authorization": f"Bearer {bad_role}"}).status_code in (401, 403)


def test_the_token_is_checked_before_the_request_is_parsed(rest_server: object, anon: Rest) -> None:
    """As PostgREST: an expired token with a bad filter is PGRST303, not the filter's PGRST100."""
    import time

    expired = anon.server.keys.sign(
        {"sub": "x", "role": "authenticated", "aud": "authenticated", "exp": int(time.time()) - 1}
    )
    headers = {"Authorization": f"Bearer {expired}"}
    assert anon.http.get("/countries?name=nonsense.x", headers=headers).json()["code"] == "PGRST303"
    assert anon.http.post("/countries", content=b"{not json", headers=headers).json()["code"] == "PGRST303"
    assert anon.http.get("/countries?name=nonsense.x").json()["code"] == "PGRST100"  # the filter is bad


def test_rpc(user_factory: UserFactory, anon: Rest) -> None:
    rest, session = user_factory()
    assert anon.http.post("/rpc/add", json={"a": 2, "b": 3}).json() == 5
    assert anon.http.post("/rpc/add", json={"a": 2}).json() == 3
    assert anon.http.get("/rpc/add", params={"a": "40", "b": "2"}).json() == 42
    big = anon.http.get("/rpc/big_countries", params={"min_pop": "80000000", "select": "name", "order": "name"})
    assert big.json() == [{"name": "Germany"}, {"name": "Japan"}]
    assert anon.http.post("/rpc/numbers", json={"n": 3}).json() == [1, 2, 3]
    assert rest.http.post("/rpc/whoami", json={}).json() == session["user"]["id"]  # type: ignore[index]
    assert anon.http.post("/rpc/whoami").json() is None
    assert rest.http.post("/rpc/bump", json={"country": 1}).status_code == 204
    unknown = anon.http.post("/rpc/nope", json={})
    assert unknown.status_code == 404 and unknown.json()["code"] == "PGRST202"
    wrong_args = anon.http.post("/rpc/add", json={"x": 1})
    assert wrong_args.status_code == 404 and wrong_args.json()["code"] == "PGRST202"
    custom = anon.http.post("/rpc/payment_required", json={})
    assert custom.status_code == 402 and custom.json()["message"] == "pay first"
    readonly = anon.http.get("/rpc/bump", params={"country": "1"})
    assert readonly.status_code == 405 and readonly.json()["code"] == "25006"


def test_statement_timeout(server_factory: Callable[..., object], rest_schema: None) -> None:
    import httpx

    server = server_factory(env={"GATEHOUSE_STATEMENT_TIMEOUT": "200", "GATEHOUSE_RATE_LIMITS_ENABLED": "false"})
    slow = httpx.get(
        f"{server.url}/rest/v1/rpc/numbers",  # type: ignore[attr-defined]
        params={"n": "100000000"},
        headers={"apikey": server.keys.publishable_key},  # type: ignore[attr-defined]
        timeout=30,
    )
    assert slow.status_code == 504 and slow.json()["code"] == "57014"


@pytest.fixture(scope="module")
def rollback_server(server_factory: Callable[..., RunningServer], rest_schema: None) -> RunningServer:
    """A second server on this module's database whose requests may ask for ``tx=rollback``."""
    return server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false", "GATEHOUSE_REST_TX_END": "commit-allow-override"})


def test_tx_rollback_answers_and_keeps_nothing(rollback_server: RunningServer, service: Rest) -> None:
    rest = Rest(rollback_server, key=rollback_server.keys.secret_key)
    try:
        once_served(lambda: rest.http.get("/countries", params={"limit": "1"}))
        tried = rest.http.post("/countries", json={"name": "Atlantis", "code": "AT"},
                               headers={"Prefer": "return=representation, tx=rollback"})
        assert tried.status_code == 201 and tried.json()[0]["name"] == "Atlantis"
        assert tried.headers["preference-applied"] == "tx=rollback"
        assert rest.http.get("/countries", params={"name": "eq.Atlantis"}).json() == []
        strict = rest.http.post("/countries", json={"name": "Lemuria"},
                                headers={"Prefer": "tx=rollback, handling=strict"})
        assert strict.status_code == 201
        assert rest.http.get("/countries", params={"name": "eq.Lemuria"}).json() == []
        kept = rest.http.post("/countries", json={"name": "Hyperborea"}, headers={"Prefer": "tx=commit"})
        assert kept.status_code == 201
        assert len(rest.http.get("/countries", params={"name": "eq.Hyperborea"}).json()) == 1
    finally:
        rest.close()
    # where requests may not choose (the default: commit), the preference is ignored, or refused when strict
    ignored = service.http.post("/countries", json={"name": "Mu"}, headers={"Prefer": "tx=rollback"})
    assert ignored.status_code == 201 and "preference-applied" not in ignored.headers
    assert len(service.http.get("/countries", params={"name": "eq.Mu"}).json()) == 1
    refused = service.http.post("/countries", json={"name": "Mu2"}, headers={"Prefer": "tx=rollback, handling=strict"})
    assert refused.status_code == 400 and refused.json()["code"] == "PGRST122"


def test_put_upserts_one_row_by_primary_key(service: Rest) -> None:
    row = {"id": 9001, "name": "Utopia", "code": "UT", "population": 1, "tags": ["isle"], "meta": {},
           "created_at": "2026-01-01T00:00:00+00:00"}
    made = service.http.put("/countries", params={"id": "eq.9001"}, json=row, headers=REPRESENTATION)
    assert made.status_code == 200, made.text
    assert made.json()[0]["name"] == "Utopia"
    changed = service.http.put("/countries", params={"id": "eq.9001"}, json={**row, "name": "Utopia II"})
    assert changed.status_code == 204 and changed.content == b""
    assert [r["name"] for r in service.http.get("/countries", params={"id": "eq.9001"}).json()] == ["Utopia II"]


@pytest.mark.parametrize(("params", "body", "code"), [
    ({"name": "eq.Utopia"}, {"id": 9002, "name": "Utopia"}, "PGRST105"),  # not the primary key
    ({}, {"id": 9002, "name": "Utopia"}, "PGRST105"),  # no filter
    ({"id": "gt.9002"}, {"id": 9002, "name": "Utopia"}, "PGRST105"),  # not eq
    ({"id": "eq.9002", "name": "eq.Utopia"}, {"id": 9002, "name": "Utopia"}, "PGRST105"),  # more than the key
    ({"id": "eq.9002", "limit": "1"}, {"id": 9002, "name": "Utopia"}, "PGRST105"),
    ({"id": "eq.9002"}, {"id": 9003, "name": "Utopia"}, "PGRST115"),  # the payload names another row
    ({"id": "eq.9002"}, [{"id": 9002, "name": "Utopia"}], "PGRST102"),  # one object only
])
def test_put_refusals(service: Rest, params: dict[str, str], body: object, code: str) -> None:
    refused = service.http.put("/countries", params=params, json=body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == code
    assert service.http.get("/countries", params={"id": "in.(9002,9003)"}).json() == []


def test_put_is_judged_by_rls(user_factory: UserFactory) -> None:
    alice, _ = user_factory()
    _, bob = user_factory()
    bob_id = bob["user"]["id"]  # type: ignore[index]
    refused = alice.http.put("/profiles", params={"id": f"eq.{bob_id}"},
                             json={"id": bob_id, "full_name": "hijacked", "username": None, "website": None,
                                   "avatar_url": None, "updated_at": None})
    assert refused.status_code == 403 and refused.json()["code"] == "42501"


def test_params_single_object_passes_the_body_as_the_one_json_parameter(service: Rest, database_url: str) -> None:
    run_sql(database_url, """
        CREATE FUNCTION public.echo_payload(payload jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
            AS 'SELECT jsonb_build_object(''got'', payload)';
        CREATE FUNCTION public.two_args(a int, b int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
        GRANT EXECUTE ON FUNCTION public.echo_payload(jsonb), public.two_args(int, int) TO anon, authenticated;
        NOTIFY gatehouse_schema, 'reload';
    """)
    single = {"Prefer": "params=single-object"}
    answer = once_served(lambda: service.http.post("/rpc/echo_payload", json={"a": 1}, headers=single))
    assert answer.status_code == 200 and answer.json() == {"got": {"a": 1}}
    listed = service.http.post("/rpc/echo_payload", json=[1, {"b": None}], headers=single)
    assert listed.json() == {"got": [1, {"b": None}]}
    # without the preference the object's keys are the arguments: no "a" parameter here
    assert service.http.post("/rpc/echo_payload", json={"a": 1}).status_code == 404
    wrong = service.http.post("/rpc/two_args", json={"a": 1, "b": 2}, headers=single)
    assert wrong.status_code == 404 and wrong.json()["code"] == "PGRST202"
    strict = service.http.post("/rpc/echo_payload", json={"a": 1}, headers={"Prefer": "params=single-object, handling=strict"})
    assert strict.status_code == 200


def test_a_roles_own_statement_timeout_cancels_with_57014(anon: Rest, service: Rest, database_url: str) -> None:
    """``ALTER ROLE anon IN DATABASE ... SET statement_timeout``, as Supabase sets per-role timeouts:
    a call past it is cancelled and answered 504 ``57014`` in PostgREST's shape, not left to hang.
    Other roles keep theirs."""
    run_sql(database_url, """
        CREATE FUNCTION public.nap(seconds float) RETURNS text LANGUAGE sql VOLATILE
            AS 'SELECT pg_sleep(seconds)::text';
        GRANT EXECUTE ON FUNCTION public.nap(float) TO anon, service_role;
        DO $$ BEGIN EXECUTE format('ALTER ROLE anon IN DATABASE %I SET statement_timeout = %L',
                                   current_database(), '300ms'); END $$;
        NOTIFY gatehouse_schema, 'reload';
    """)
    try:
        answer = once_served(lambda: anon.http.post("/rpc/nap", json={"seconds": 5}))
        assert answer.status_code == 504, answer.text
        assert answer.json() == {"code": "57014", "details": None, "hint": None,
                                 "message": "canceling statement due to statement timeout"}
        assert anon.http.post("/rpc/nap", json={"seconds": 0}).status_code == 200  # the connection is fine after
        assert service.http.post("/rpc/nap", json={"seconds": 0.5}).status_code == 200  # not service_role's
    finally:
        run_sql(database_url, "DO $$ BEGIN EXECUTE format('ALTER ROLE anon IN DATABASE %I RESET statement_timeout', "
                              "current_database()); END $$; NOTIFY gatehouse_schema, 'reload';")
