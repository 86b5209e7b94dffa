"""supabase-py's ``list_v2``: keyset pages, folders, sort orders, RLS; and routes that never reach uploads."""

from __future__ import annotations

import base64
from collections.abc import Callable
from urllib.parse import quote

import httpx
import orjson
import pytest
from storage3.exceptions import StorageApiError
from supabase import Client

from gatehouse.core.db import Database
from tests.support import RunningServer

Clients = Callable[..., tuple[Client, str | None]]


@pytest.fixture(scope="module")
async def own_folders(db: Database) -> None:
    await db.admin.execute(
        """
        INSERT INTO storage.buckets (id, name) VALUES ('shelf', 'shelf');
        CREATE POLICY "shelf: own folder in" ON storage.objects FOR INSERT TO authenticated
            WITH CHECK (bucket_id = 'shelf' AND (storage.foldername(name))[1] = (SELECT auth.uid())::text);
        CREATE POLICY "shelf: own folder out" ON storage.objects FOR SELECT TO authenticated
            USING (bucket_id = 'shelf' AND (storage.foldername(name))[1] = (SELECT auth.uid())::text);
        """
    )


@pytest.fixture
def alice(clients: Clients, own_folders: None) -> tuple[Client, str]:
    alice, uid = clients()
    bob, bob_id = clients()
    for name in ("a.txt", "b.txt", "sub/c.txt", "sub/d.txt", "z.txt"):
        alice.storage.from_("shelf").upload(f"{uid}/{name}", name.encode(), {"content-type": "text/plain"})
    bob.storage.from_("shelf").upload(f"{bob_id}/secret.txt", b"bob's", {"content-type": "text/plain"})
    assert uid is not None
    return alice, uid


def names(page: object) -> tuple[list[str], list[str]]:
    return [f.name for f in page.folders], [o.name for o in page.objects]  # type: ignore[attr-defined]


def test_folders_and_objects_under_a_prefix(alice: tuple[Client, str]) -> None:
    client, uid = alice
    shelf = client.storage.from_("shelf")
    top = shelf.list_v2({"with_delimiter": True})
    assert names(top) == ([f"{uid}/"], [])  # bob's folder is not the caller's to see
    inside = shelf.list_v2({"prefix": f"{uid}/", "with_delimiter": True})
    assert names(inside) == ([f"{uid}/sub/"], [f"{uid}/a.txt", f"{uid}/b.txt", f"{uid}/z.txt"])
    assert not inside.hasNext and inside.nextCursor is None
    flat = shelf.list_v2({"prefix": f"{uid}/"})
    assert names(flat)[1] == [f"{uid}/{n}" for n in ("a.txt", "b.txt", "sub/c.txt", "sub/d.txt", "z.txt")]
    assert all(o.metadata and o.metadata["size"] for o in flat.objects)


def test_keyset_pages_fold_a_folder_once(alice: tuple[Client, str]) -> None:
    client, uid = alice
    shelf = client.storage.from_("shelf")
    seen: list[str] = []
    options: dict[str, object] = {"prefix": f"{uid}/", "with_delimiter": True, "limit": 1}
    while True:
        page = shelf.list_v2(options)  # type: ignore[arg-type]
        folders, objects = names(page)
        assert len(folders) + len(objects) == 1
        seen += folders + objects
        if not page.hasNext:
            break
        options["cursor"] = page.nextCursor
    assert seen == [f"{uid}/a.txt", f"{uid}/b.txt", f"{uid}/sub/", f"{uid}/z.txt"]


@pytest.mark.parametrize(("column", "order"), [("name", "desc"), ("created_at", "asc"), ("updated_at", "desc")])
def test_sorted_pages_neither_repeat_nor_skip(alice: tuple[Client, str], column: str, order: str) -> None:
    client, uid = alice
    shelf = client.storage.from_("shelf")
    whole = shelf.list_v2({"prefix": f"{uid}/", "sortBy": {"column": column, "order": order}})  # type: ignore[typeddict-item]
    expected = names(whole)[1]
    assert sorted(expected) == sorted(f"{uid}/{n}" for n in ("a.txt", "b.txt", "sub/c.txt", "sub/d.txt", "z.txt"))
    if column == "name":
        assert expected == sorted(expected, reverse=True)
    paged: list[str] = []
    options: dict[str, object] = {"prefix": f"{uid}/", "limit": 2, "sortBy": {"column": column, "order": order}}
    while True:
        page = shelf.list_v2(options)  # type: ignore[arg-type]
        paged += names(page)[1]
        if not page.hasNext:
            break
        options = {"prefix": f"{uid}/", "limit": 2, "cursor": page.nextCursor}
    assert paged == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"limit": 0}, "limit"), ({"limit": "10"}, "limit"), ({"prefix": 5}, "prefix"),
        ({"with_delimiter": "yes"}, "with_delimiter"), ({"sortBy": {"column": "size"}}, "sortBy"),
        ({"sortBy": {"column": "name; drop table x"}}, "sortBy"), ({"cursor": "not base64!"}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(orjson.dumps({"k": "x", "c": "owner", "d": False})).decode()}, "cursor"),
        ({"with_delimiter": True, "sortBy": {"column": "created_at"}}, "name order"),
    ],
)
def test_bad_requests_are_refused(live: RunningServer, alice: tuple[Client, str], body: dict[str, object],
                                  message: str) -> None:
    client, _ = alice
    token = client.auth.get_session().access_token  # type: ignore[union-attr]
    response = httpx.post(f"{live.url}/storage/v1/object/list-v2/shelf", json=body,
                          headers={"apikey": live.keys.publishable_key, "Authorization": f"Bearer {token}"})
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


def test_a_forged_cursor_shows_nothing_rls_hides(live: RunningServer, alice: tuple[Client, str]) -> None:
    client, _ = alice
    cursor = base64.urlsafe_b64encode(orjson.dumps({"k": "", "c": "name", "d": False})).decode()
    page = client.storage.from_("shelf").list_v2({"cursor": cursor})
    assert all(o.name.startswith(page.objects[0].name.split("/")[0]) for o in page.objects)
    anon = httpx.post(f"{live.url}/storage/v1/object/list-v2/shelf", json={},
                      headers={"apikey": live.keys.publishable_key})
    assert anon.status_code == 200 and anon.json()["objects"] == [] and anon.json()["folders"] == []


def test_route_words_are_never_buckets(live: RunningServer, clients: Clients) -> None:
    admin, _ = clients(signed_in=False, key=live.keys.secret_key)
    with pytest.raises(StorageApiError) as reserved:
        admin.storage.create_bucket("list-v2")
    assert reserved.value.status == "400" and "reserved" in reserved.value.message
    key = {"apikey": live.keys.secret_key, "Authorization": f"Bearer {live.keys.secret_key}"}
    for path in ("/object/list-v2/x/y.txt", "/object/move/y.txt", "/object/upload/y.txt", "/object/public/y.txt"):
        stored = httpx.post(f"{live.url}/storage/v1{path}", content=b"{}", headers={**key, "Content-Type": "text/plain"})
        assert stored.json()["statusCode"] == "404" and stored.json()["code"] == "NotFound", (path, stored.text)


@pytest.mark.parametrize("name", ["line\nbreak.txt", "carriage\rreturn.txt", "tab\there.txt"])
def test_names_with_control_characters_are_invalid_keys(live: RunningServer, name: str) -> None:
    key = {"apikey": live.keys.secret_key, "Authorization": f"Bearer {live.keys.secret_key}"}
    for method in ("POST", "GET", "DELETE"):
        response = httpx.request(method, f"{live.url}/storage/v1/object/avatars/{quote(name)}", content=b"x",
                                 headers={**key, "Content-Type": "text/plain"})
        assert response.status_code == 400 and response.json()["code"] == "InvalidKey", (method, response.text)
