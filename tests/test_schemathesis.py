"""Property tests with schemathesis (issue #8, item 6): no 5xx, and no response that breaks its description.

Three OpenAPI documents are tested against one real server:

* ``/rest/v1/``: the document the server generates (``gatehouse/rest/openapi.py``), fetched from
  ``GET /rest/v1/`` with the publishable key;
* ``docs/openapi/auth.yaml`` and ``docs/openapi/storage.yaml``: written by hand, loaded with their
  ``servers`` pointed at this server.

Each document runs in passes that differ only in who calls, because most operations give the
wrong caller nothing but a 401/403: anonymous (the publishable key alone), a signed-in user (plus
the user's access token as the bearer) and the service role (plus a service_role JWT as the
bearer: the admin operations and storage's bucket operations need it). The publishable key goes
out as ``apikey`` on every call. Every operation of every document runs in at least one pass; the
auth passes for a user and for the service role take only the operations tagged ``user`` and
``admin`` (the anonymous pass covers those too, where they answer 401/403).

Cases come from three schemathesis phases: the documents' examples (the fixture below adds
examples naming the real users, objects and tokens, so that the success shapes are checked, not
only the errors), the coverage phase (boundary values, missing and wrong-typed fields), and
fuzzing with at most ``MAX_EXAMPLES`` cases per operation, positive and negative. Generation is
derandomized with a fixed seed and uses no example database, so a run is reproducible. Fuzzing
also draws some parameter values from dictionaries of real values (an existing bucket, object
name or user id, a user's email and password) with a fixed probability, so generated cases reach
past "not found".

Checks, from schemathesis's set:

* on: ``not_a_server_error`` (no 5xx), ``status_code_conformance`` (the status is documented),
  ``content_type_conformance``, ``response_headers_conformance`` and
  ``response_schema_conformance`` (the body matches the documented schema).
* off, because they test other properties than "no 5xx, no response that breaks its schema":
  ``negative_data_rejection`` and ``positive_data_acceptance`` (input strictness: the APIs ignore
  unknown keys and some values on purpose, as GoTrue, PostgREST and Storage do, and ``GET
  /verify`` always redirects), ``missing_required_header``, ``unsupported_method``, the
  authentication checks (``ignored_auth``) and the stateful ones (``use_after_free``,
  ``ensure_resource_availability``; pytest runs no stateful phase). The coverage phase's probes
  of undocumented methods and content types still go out and are still held to "no 5xx".

When a check fails, the server's log lines for that request (found by the ``X-Request-Id`` this
module sends) are printed and attached to the failure.
"""

from __future__ import annotations

import copy
import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
import yaml
from PIL import Image

from tests.support import RunningServer

DOCS = Path(__file__).resolve().parent.parent / "docs" / "openapi"
#: Fuzzed cases per operation and pass (the examples and coverage phases add their own, bounded by the schema).
MAX_EXAMPLES = 20
SEED = 8006
#: How often a fuzzed parameter takes a value from the dictionaries of real values below (unless set per binding).
REAL_VALUE_PROBABILITY = 0.35
PASSWORD = "correct horse battery staple 8"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


def png(size: int = 32) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), "teal").save(out, format="PNG")
    return out.getvalue()


# -- the world the cases run in -------------------------------------------------------------------


@dataclass
class World:
    server: RunningServer
    admin: httpx.Client  # the secret key, for setting the stage (not a call under test)
    http: requests.Session = field(default_factory=requests.Session)
    user_id: str = ""
    user_email: str = ""
    token: str = ""  # user A's access token
    other_email: str = ""  # user B: signs in afresh for each logout case
    victims: list[str] = field(default_factory=list)  # users the admin pass may change and delete
    victim_emails: list[str] = field(default_factory=list)
    stock: dict[str, str] = field(default_factory=dict)  # runtime values for the examples

    @property
    def publishable(self) -> str:
        return self.server.keys.publishable_key

    def create_user(self, email: str) -> str:
        response = self.admin.post(
            "/auth/v1/admin/users", json={"email": email, "password": PASSWORD, "email_confirm": True}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def log_in(self, email: str) -> str:
        response = httpx.post(
            f"{self.server.url}/auth/v1/token?grant_type=password",
            headers={"apikey": self.publishable},
            json={"email": email, "password": PASSWORD},
            timeout=20,
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def storage(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.admin.request(method, f"/storage/v1{path}", **kwargs)

    def restock(self) -> None:
        """Put back the buckets and objects the storage examples name (a pass may delete or move them)."""
        for bucket in ("fuzz", "scratch"):
            made = self.storage("POST", "/bucket", json={"id": bucket, "public": True})
            assert made.status_code in (200, 400), made.text
            reset = self.storage(
                "PUT", f"/bucket/{bucket}", json={"public": True, "file_size_limit": None, "allowed_mime_types": None}
            )
            assert reset.status_code == 200, reset.text
        objects = {
            "fuzz/hello.txt": (b"hello, schemathesis\n", "text/plain"),
            "fuzz/folder/nested.txt": (b"nested\n", "text/plain"),
            "fuzz/image.png": (png(), "image/png"),
            "fuzz/move-me.txt": (b"move me\n", "text/plain"),
            "fuzz/delete-me.txt": (b"delete me\n", "text/plain"),
            "fuzz/delete-me-too.txt": (b"delete me too\n", "text/plain"),
            "scratch/empty-me.txt": (b"empty me\n", "text/plain"),
        }
        for key, (body, content_type) in objects.items():
            stored = self.storage("PUT", f"/object/{key}", content=body, headers={"content-type": content_type})
            assert stored.status_code == 200, stored.text
        own = httpx.put(
            f"{self.server.url}/storage/v1/object/avatars/{self.user_id}-avatar.png",
            content=png(),
            headers={"apikey": self.publishable, "Authorization": f"Bearer {self.token}", "content-type": "image/png"},
            timeout=20,
        )
        assert own.status_code == 200, own.text
        signed = self.storage("POST", "/object/sign/fuzz/hello.txt", json={"expiresIn": 3600})
        assert signed.status_code == 200, signed.text
        self.stock["download_token"] = signed.json()["signedURL"].split("token=", 1)[1]
        signed = self.storage("POST", "/object/sign/fuzz/image.png", json={"expiresIn": 3600})
        self.stock["image_token"] = signed.json()["signedURL"].split("token=", 1)[1]
        upload = self.storage("POST", "/object/upload/sign/fuzz/signed-upload.txt", headers={"x-upsert": "true"})
        assert upload.status_code == 200, upload.text
        self.stock["upload_token"] = upload.json()["token"]

    def links(self) -> None:
        """Fresh email-link tokens for the auth examples (each works once)."""
        for kind, key in (("magiclink", "magiclink_hash"), ("recovery", "recovery_hash")):
            made = self.admin.post("/auth/v1/admin/generate_link", json={"type": kind, "email": self.victim_emails[0]})
            assert made.status_code == 200, made.text
            self.stock[key] = made.json()["hashed_token"]


@pytest.fixture(scope="module")
def world(server_factory: Callable[..., RunningServer]) -> Iterator[World]:
    server = server_factory(env={"GATEHOUSE_RATE_LIMITS_ENABLED": "false"})
    admin = httpx.Client(base_url=server.url, headers={"apikey": server.keys.secret_key}, timeout=20)
    world = World(server, admin)
    world.user_email = "fuzz-user@example.com"
    world.user_id = world.create_user(world.user_email)
    world.token = world.log_in(world.user_email)
    world.other_email = "fuzz-other@example.com"
    world.create_user(world.other_email)
    for n in range(3):
        email = f"fuzz-victim-{n}@example.com"
        world.victims.append(world.create_user(email))
        world.victim_emails.append(email)
    world.restock()
    yield world
    world.http.close()
    admin.close()


# -- documents, with runtime examples ---------------------------------------------------------------


def _resolve(doc: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in item:
        node: Any = doc
        for part in item["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        item = node
    return item


def example(doc: dict[str, Any], method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None) -> None:
    """Give one operation of ``doc`` example values (inline copies, so other operations keep theirs)."""
    item = doc["paths"][path]
    operation = item[method]
    for name, value in (params or {}).items():
        candidates = [*(operation.get("parameters") or []), *(item.get("parameters") or [])]
        found = next(p for p in (_resolve(doc, c) for c in candidates) if p["name"] == name)
        inline = {**copy.deepcopy(found), "example": value}
        kept = [p for p in operation.get("parameters") or [] if _resolve(doc, p)["name"] != name]
        operation["parameters"] = [*kept, inline]
    if body is not None:
        request_body = copy.deepcopy(_resolve(doc, operation["requestBody"]))
        media = next(m for m in request_body["content"] if "json" in m)
        request_body["content"][media]["example"] = body
        operation["requestBody"] = request_body


def config(
    base_url: str,
    dictionaries: dict[str, list[Any]] | None = None,
    bindings: dict[str, str | tuple[str, float]] | None = None,
) -> schemathesis.Config:
    """Settings of one pass. ``bindings`` map ``location.name`` to a dictionary (and a probability)."""
    data: dict[str, Any] = {
        "seed": SEED,
        "base-url": base_url,
        "request-timeout": 30,
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
            # The callers' credentials are sent by this module, never generated.
            "with-security-parameters": False,
        },
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
    }
    if dictionaries:
        data["dictionaries"] = {name: {"values": values} for name, values in dictionaries.items()}
        data["parameters"] = {}
        for key, binding in (bindings or {}).items():
            name, probability = binding if isinstance(binding, tuple) else (binding, REAL_VALUE_PROBABILITY)
            data["parameters"][key] = {"dictionary": name, "probability": probability}
    return schemathesis.Config.from_dict(data)


def load(doc: dict[str, Any], base_url: str, **options: Any) -> Any:
    doc["servers"] = [{"url": base_url}]
    return schemathesis.openapi.from_dict(doc, config=config(base_url, **options))


def rest_schema(world: World) -> Any:
    # The document follows the caller's privileges: the service role's describes every operation,
    # which the cases then try as anonymous and signed-in callers too.
    response = world.admin.get("/rest/v1/")
    assert response.status_code == 200, response.text
    return load(
        response.json(),
        f"{world.server.url}/rest/v1",
        dictionaries={
            "ids": [f"eq.{world.user_id}", f"in.({world.user_id},{world.victims[0]})", "is.null"],
            "selects": ["*", "id,username,full_name", "id,avatar_url,website"],
            "orders": ["username.desc.nullslast", "id"],
            "schemas": ["public"],
            "prefers": ["return=representation", "return=minimal", "count=exact",
                        "return=representation,resolution=merge-duplicates", "return=headers-only"],
        },
        # Random profile headers are all 406: send the exposed schema most of the time, to get past it.
        bindings={"query.id": "ids", "query.select": "selects", "query.order": "orders", "header.Prefer": "prefers",
                  "header.Accept-Profile": ("schemas", 0.8), "header.Content-Profile": ("schemas", 0.8)},
    )


def auth_schema(world: World) -> Any:
    doc = yaml.safe_load((DOCS / "auth.yaml").read_text())
    world.links()
    new = f"fuzz-new-{uuid.uuid4().hex[:8]}@example.com"
    example(doc, "post", "/token", params={"grant_type": "password"}, body={"email": world.user_email, "password": PASSWORD})
    example(doc, "post", "/signup", body={"email": new, "password": PASSWORD, "data": {"full_name": "New"}})
    example(doc, "post", "/verify", body={"type": "magiclink", "token_hash": world.stock["magiclink_hash"]})
    example(doc, "get", "/verify", params={"token": world.stock["recovery_hash"], "type": "recovery"})
    for path in ("/otp", "/magiclink", "/recover"):
        example(doc, "post", path, body={"email": world.victim_emails[1]})
    example(doc, "post", "/resend", body={"type": "signup", "email": new})
    example(doc, "put", "/user", body={"data": {"full_name": "Fuzz User"}})
    example(doc, "post", "/logout", params={"scope": "local"})
    example(doc, "post", "/invite", body={"email": f"fuzz-invitee-{uuid.uuid4().hex[:8]}@example.com"})
    example(doc, "get", "/admin/users", params={"page": "1", "per_page": "2"})
    example(doc, "post", "/admin/users", body={"email": f"fuzz-made-{uuid.uuid4().hex[:8]}@example.com",
                                               "password": PASSWORD, "email_confirm": True})
    example(doc, "get", "/admin/users/{user_id}", params={"user_id": world.victims[1]})
    example(doc, "put", "/admin/users/{user_id}", params={"user_id": world.victims[1]},
            body={"user_metadata": {"full_name": "Victim"}, "ban_duration": "none"})
    example(doc, "delete", "/admin/users/{user_id}", params={"user_id": world.victims[2]}, body={"should_soft_delete": True})
    example(doc, "post", "/admin/generate_link", body={"type": "magiclink", "email": world.victim_emails[1]})
    return load(
        doc,
        f"{world.server.url}/auth/v1",
        dictionaries={
            "emails": [world.user_email, world.other_email, *world.victim_emails, "nobody@example.com"],
            "passwords": [PASSWORD],
            "user_ids": world.victims,
        },
        bindings={"body.email": "emails", "body.password": "passwords", "path.user_id": "user_ids"},
    )


def storage_schema(world: World, bucket: str, name: str) -> Any:
    """Storage, with examples naming an object the pass's caller can reach (``bucket``/``name``)."""
    doc = yaml.safe_load((DOCS / "storage.yaml").read_text())
    world.restock()
    doc["components"]["parameters"]["Bucket"]["example"] = bucket
    doc["components"]["parameters"]["Path"]["example"] = name
    example(doc, "get", "/object/sign/{bucket}/{path}", params={"bucket": "fuzz", "path": "hello.txt",
                                                                 "token": world.stock["download_token"]})
    example(doc, "head", "/object/sign/{bucket}/{path}", params={"bucket": "fuzz", "path": "hello.txt",
                                                                  "token": world.stock["download_token"]})
    example(doc, "put", "/object/upload/sign/{bucket}/{path}", params={
        "bucket": "fuzz", "path": "signed-upload.txt", "token": world.stock["upload_token"]})
    example(doc, "post", "/object/sign/{bucket}/{path}", body={"expiresIn": 60})
    example(doc, "post", "/object/sign/{bucket}", body={"expiresIn": "60", "paths": [name, "missing.txt"]})
    example(doc, "post", "/object/list/{bucket}", body={"prefix": "", "limit": 10, "sortBy": {"column": "name", "order": "desc"}})
    example(doc, "get", "/render/image/{mode}/{bucket}/{path}", params={
        "mode": "sign", "bucket": "fuzz", "path": "image.png", "token": world.stock["image_token"], "width": 16})
    example(doc, "post", "/object/move", body={"bucketId": "fuzz", "sourceKey": "move-me.txt", "destinationKey": "moved.txt"})
    example(doc, "post", "/object/copy", body={"bucketId": "fuzz", "sourceKey": "hello.txt",
                                                "destinationKey": f"copy-{uuid.uuid4().hex[:8]}.txt"})
    example(doc, "delete", "/object/{bucket}/{path}", params={"bucket": bucket, "path": "delete-me.txt"})
    example(doc, "delete", "/object/{bucket}", params={"bucket": "fuzz"}, body={"prefixes": ["delete-me-too.txt"]})
    example(doc, "post", "/bucket", body={"id": f"made-{uuid.uuid4().hex[:8]}", "public": False,
                                          "file_size_limit": "1MB", "allowed_mime_types": ["text/*"]})
    example(doc, "put", "/bucket/{bucket}", params={"bucket": "fuzz"}, body={"public": True})
    example(doc, "post", "/bucket/{bucket}/empty", params={"bucket": "scratch"})
    example(doc, "delete", "/bucket/{bucket}", params={"bucket": "scratch"}, body={})
    return load(
        doc,
        f"{world.server.url}/storage/v1",
        dictionaries={
            "buckets": ["fuzz", "avatars", "scratch"],
            "names": ["hello.txt", "folder/nested.txt", "image.png", f"{world.user_id}-avatar.png", "folder"],
            "movable": ["move-me.txt", "folder/nested.txt"],
            "tokens": [world.stock["download_token"], world.stock["image_token"], world.stock["upload_token"]],
        },
        bindings={
            "path.bucket": "buckets", "path.path": "names", "query.token": "tokens",
            "body.bucketId": "buckets", "body.sourceKey": "movable",
        },
    )


# -- calling and checking ----------------------------------------------------------------------------


def call_and_validate(case: Any, world: World, headers: dict[str, str]) -> None:
    """One case: call with ``headers`` (and a request id), run the checks; on failure, add the server's log."""
    request_id = f"st-{uuid.uuid4().hex}"
    log_start = world.server.log_path.stat().st_size  # requests run one at a time: what follows is this one's
    try:
        case.call_and_validate(
            session=world.http, headers={**headers, "X-Request-Id": request_id}, allow_redirects=False
        )
    except BaseException as exc:
        with world.server.log_path.open("rb") as log:
            log.seek(log_start)
            lines = log.read().decode(errors="replace").strip()
        context = f"X-Request-Id {request_id}; server log for this request:\n{lines or '(nothing)'}"
        print(context)
        exc.add_note(context)
        raise
    finally:
        world.http.cookies.clear()


def anonymous(world: World) -> dict[str, str]:
    return {"apikey": world.publishable}


def signed_in(world: World) -> dict[str, str]:
    return {"apikey": world.publishable, "Authorization": f"Bearer {world.token}"}


def service_role(world: World) -> dict[str, str]:
    return {"apikey": world.publishable, "Authorization": f"Bearer {world.server.keys.service_role_key}"}


@pytest.fixture(autouse=True)
def _lazy_schema_node_id(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's fixture-loaded schemas read and write ``Node._nodeid``, which pytest 9.2
    replaced with ``Node._id``; give it the attribute (pytest itself no longer reads it)."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


# The passes, in the order pytest runs them: those that need user A's session before the auth passes,
# which change A (password, email) and let the admin operations loose on the users last. Each pass
# loads its document afresh (and the storage ones restock the objects the previous pass removed).


@pytest.fixture
def rest(world: World) -> Any:
    return rest_schema(world)


@pytest.fixture
def storage_public(world: World) -> Any:
    return storage_schema(world, "fuzz", "hello.txt")


@pytest.fixture
def storage_own(world: World) -> Any:
    return storage_schema(world, "avatars", f"{world.user_id}-avatar.png")


@pytest.fixture
def storage_service(world: World) -> Any:
    return storage_schema(world, "fuzz", "hello.txt")


@pytest.fixture
def auth(world: World) -> Any:
    return auth_schema(world)


REST = schemathesis.pytest.from_fixture("rest")


@REST.parametrize()
def test_rest_anonymous(case: Any, world: World) -> None:
    call_and_validate(case, world, anonymous(world))


@REST.parametrize()
def test_rest_signed_in(case: Any, world: World) -> None:
    call_and_validate(case, world, signed_in(world))


@schemathesis.pytest.from_fixture("storage_public").parametrize()
def test_storage_anonymous(case: Any, world: World) -> None:
    call_and_validate(case, world, anonymous(world))


@schemathesis.pytest.from_fixture("storage_own").parametrize()
def test_storage_signed_in(case: Any, world: World) -> None:
    call_and_validate(case, world, signed_in(world))


@schemathesis.pytest.from_fixture("storage_service").parametrize()
def test_storage_service_role(case: Any, world: World) -> None:
    call_and_validate(case, world, service_role(world))


AUTH = schemathesis.pytest.from_fixture("auth")


@AUTH.parametrize()
def test_auth_anonymous(case: Any, world: World) -> None:
    call_and_validate(case, world, anonymous(world))


@AUTH.include(tag="user").parametrize()
def test_auth_signed_in(case: Any, world: World) -> None:
    headers = signed_in(world)
    if case.path == "/logout":  # a fresh session of user B each time, so that A stays signed in
        headers["Authorization"] = f"Bearer {world.log_in(world.other_email)}"
    call_and_validate(case, world, headers)


@AUTH.include(tag="admin").parametrize()
def test_auth_service_role(case: Any, world: World) -> None:
    call_and_validate(case, world, service_role(world))
