"""The tutorial's steps as each system's clients send them, as wrk workloads.

(a) sign up, (b) log in with password, (c) read own profile, (d) upsert own profile, (e) upload a
~100 KB PNG avatar, (f) download it as the tutorial's avatar widget does (signed in, through the
access rules), (g) refresh the session, (h) load the /account page, (i) fetch the avatar's public URL.

Gatehouse is driven like supabase-js drives Supabase (the user-management tutorial's calls);
PocketBase like its JS SDK drives it. Steps (b) to (i) cycle through a pool of users made at set-up
(at least ``MIN_USERS``, and twice as many as connections, so concurrent requests rarely share a
user); sign-ups make new addresses per request; a refresh always presents a token never used before (Gatehouse rotates
them: each answer's token goes back into the pool). Avatars keep one name per user and are
replaced on upload (``x-upsert``; PocketBase replaces a record's file), so the disk does not fill.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
from PIL import Image

from bench.harness import PASSWORD, Server
from bench.pocketbase import PocketBase
from bench.workload import Request, Workload

STEPS = {
    "a": "sign up",
    "b": "log in",
    "c": "read own profile",
    "d": "upsert own profile",
    "e": "upload 100 KB avatar",
    "f": "download avatar",
    "g": "refresh session",
    "h": "/account page",
    "i": "avatar public URL",
}
#: The smallest pool of users the steps spread over.
MIN_USERS = 200
PROFILE_SELECT = "full_name,username,website,avatar_url"
OBJECT = "application/vnd.pgrst.object+json"
BOUNDARY = "----GatehouseBenchBoundary7MA4YWxkTrZu0gW"
#: What a browser sends with the cookies: a CSRF cookie of the right length, so none is minted.
CSRF = "b" * 43

T = TypeVar("T")


def avatar_png(path: Path, size: int = 100 * 1024) -> Path:
    """A real PNG of random pixels (so it does not compress) just over ``size`` bytes."""
    rng = random.Random(7)
    side = 150
    while True:
        image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
        out = BytesIO()
        image.save(out, "PNG")
        if out.tell() >= size:
            path.write_bytes(out.getvalue())
            return path
        side += 2


def multipart(prefix_fields: dict[str, str], file_field: str, filename: str, content_type: str) -> tuple[str, str]:
    """The text around a file's bytes in a multipart/form-data body: (before, after)."""
    before = "".join(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                     for name, value in prefix_fields.items())
    before += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
               f"Content-Type: {content_type}\r\n\r\n")
    return before, f"\r\n--{BOUNDARY}--\r\n"


async def limited(jobs: list[Callable[[], Awaitable[T]]], limit: int = 8) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return await asyncio.gather(*(one(job) for job in jobs))


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


@dataclass
class User:
    email: str
    id: str
    token: str
    refresh_token: str = ""
    avatar: str = ""  # PocketBase: the stored file's name (a protected field)
    public_avatar: str = ""  # PocketBase: the same image in a field anyone may read
    file_token: str = ""  # PocketBase: the token a protected file is served with


def _username(user_id: str) -> str:
    return "user_" + user_id.replace("-", "")[:12]


def _profile(user_id: str) -> dict[str, str]:
    """The tutorial's updateProfile body; ``{n}`` makes each request's values new."""
    return {"full_name": "Bench {n}", "username": _username(user_id), "website": "https://example.com/{n}"}


class GatehouseSteps:
    def __init__(self, server: Server, avatar: Path, users: int) -> None:
        self.server = server
        self.avatar = avatar
        self.count = users
        self.users: list[User] = []
        self.api = {"apikey": server.publishable_key}
        self.run_id = secrets.token_hex(3)

    def setup(self) -> None:
        async def make() -> list[User]:
            async with httpx.AsyncClient(base_url=self.server.url, headers=self.api, timeout=60) as client:
                async def one(i: int) -> User:
                    email = f"pool-{self.run_id}-{i}@example.com"
                    answer = await client.post("/auth/v1/signup", json={
                        "email": email, "password": PASSWORD, "data": {"full_name": f"Pool {i}"}})
                    body = answer.raise_for_status().json()
                    user = User(email, body["user"]["id"], body["access_token"], body["refresh_token"])
                    put = await client.post(f"/storage/v1/object/avatars/{user.id}-avatar.png",
                                            content=self.avatar.read_bytes(),
                                            headers={"Authorization": f"Bearer {user.token}",
                                                     "Content-Type": "image/png", "x-upsert": "true"})
                    put.raise_for_status()
                    return user

                return await limited([partial(one, i) for i in range(self.count)])

        self.users = asyncio.run(make())

    def sessions(self) -> list[str]:
        """Fresh refresh tokens: one log-in per pool user."""
        async def make() -> list[str]:
            async with httpx.AsyncClient(base_url=self.server.url, headers=self.api, timeout=60) as client:
                async def one(user: User) -> str:
                    answer = await client.post("/auth/v1/token?grant_type=password",
                                               json={"email": user.email, "password": PASSWORD})
                    return str(answer.raise_for_status().json()["refresh_token"])

                return await limited([partial(one, u) for u in self.users])

        return asyncio.run(make())

    def _auth(self, user: User, **more: str) -> dict[str, str]:
        return {**self.api, "Authorization": f"Bearer {user.token}", **more}

    def workload(self, step: str) -> Workload:
        json_type = {"Content-Type": "application/json"}
        if step == "a":
            body = _json({"email": "bench-{n}@example.com", "password": PASSWORD, "data": {"full_name": "Bench {n}"}})
            return Workload([Request("POST", "/auth/v1/signup", {**self.api, **json_type}, body)])
        if step == "b":
            return Workload([Request("POST", "/auth/v1/token?grant_type=password", {**self.api, **json_type},
                                     _json({"email": u.email, "password": PASSWORD})) for u in self.users])
        if step == "c":
            return Workload([Request("GET", f"/rest/v1/profiles?select={PROFILE_SELECT}&id=eq.{u.id}",
                                     self._auth(u, Accept=OBJECT)) for u in self.users])
        if step == "d":
            prefer = {"Prefer": "resolution=merge-duplicates,return=minimal", **json_type}
            return Workload([Request("POST", "/rest/v1/profiles?on_conflict=id", self._auth(u, **prefer),
                                     _json({"id": u.id, **_profile(u.id), "updated_at": "2026-01-01T00:00:00Z"}))
                             for u in self.users])
        if step == "e":
            # supabase-js in a browser: a form with cacheControl and the file in a part with an empty name.
            before, after = multipart({"cacheControl": "3600"}, "", "avatar.png", "image/png")
            form = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "x-upsert": "true"}
            return Workload([Request("POST", f"/storage/v1/object/avatars/{u.id}-avatar.png", self._auth(u, **form),
                                     [before, 1, after]) for u in self.users], blobs=[self.avatar])
        if step == "f":
            # supabase.storage.from('avatars').download(path): the object route, as the user, through RLS.
            return Workload([Request("GET", f"/storage/v1/object/avatars/{u.id}-avatar.png", self._auth(u))
                             for u in self.users], want_response=False)
        if step == "g":
            return Workload([Request("POST", "/auth/v1/token?grant_type=refresh_token", {**self.api, **json_type},
                                     '{"refresh_token":"{rt}"}')],
                            tokens=self.sessions(), capture='"refresh_token":"([^"]+)"')
        if step == "h":
            return Workload([Request("GET", "/account", {
                "Cookie": f"gh-access-token={u.token}; gh-refresh-token={u.refresh_token}; gh-csrf={CSRF}",
                "Accept": "text/html"}) for u in self.users])
        if step == "i":
            return Workload([Request("GET", f"/storage/v1/object/public/avatars/{u.id}-avatar.png", dict(self.api))
                             for u in self.users], want_response=False)
        raise ValueError(step)


class PocketBaseSteps:
    def __init__(self, server: PocketBase, avatar: Path, users: int) -> None:
        self.server = server
        self.avatar = avatar
        self.count = users
        self.users: list[User] = []
        self.run_id = secrets.token_hex(3)

    def setup(self) -> None:
        async def make() -> list[User]:
            async with httpx.AsyncClient(base_url=self.server.url, timeout=60) as client:
                async def one(i: int) -> User:
                    email = f"pool-{self.run_id}-{i}@example.com"
                    (await client.post("/api/collections/users/records", json={
                        "email": email, "password": PASSWORD, "passwordConfirm": PASSWORD,
                        "full_name": f"Pool {i}"})).raise_for_status()
                    body = (await client.post("/api/collections/users/auth-with-password",
                                              json={"identity": email, "password": PASSWORD})).raise_for_status().json()
                    user = User(email, body["record"]["id"], body["token"])
                    image = self.avatar.read_bytes()
                    put = await client.patch(f"/api/collections/users/records/{user.id}",
                                             headers={"Authorization": user.token},
                                             files={"avatar": ("avatar.png", image, "image/png"),
                                                    "avatar_public": ("avatar.png", image, "image/png")})
                    record = put.raise_for_status().json()
                    user.avatar, user.public_avatar = record["avatar"], record["avatar_public"]
                    return user

                return await limited([partial(one, i) for i in range(self.count)])

        self.users = asyncio.run(make())

    def refresh_avatars(self) -> None:
        """Uploads replace the file (and its name): learn the current names, and a file token each
        (the protected avatar is served only with one, as the JS SDK's ``pb.files.getToken()``)."""
        async def fetch() -> None:
            async with httpx.AsyncClient(base_url=self.server.url, timeout=60) as client:
                async def one(user: User) -> None:
                    auth = {"Authorization": user.token}
                    answer = await client.get(f"/api/collections/users/records/{user.id}", headers=auth)
                    user.avatar = answer.raise_for_status().json()["avatar"]
                    token = await client.post("/api/files/token", headers=auth)
                    user.file_token = token.raise_for_status().json()["token"]

                await limited([partial(one, u) for u in self.users])

        asyncio.run(fetch())

    def sessions(self) -> list[str]:
        async def make() -> list[str]:
            async with httpx.AsyncClient(base_url=self.server.url, timeout=60) as client:
                async def one(user: User) -> str:
                    answer = await client.post("/api/collections/users/auth-with-password",
                                               json={"identity": user.email, "password": PASSWORD})
                    return str(answer.raise_for_status().json()["token"])

                return await limited([partial(one, u) for u in self.users])

        return asyncio.run(make())

    def workload(self, step: str) -> Workload | None:
        json_type = {"Content-Type": "application/json"}
        records = "/api/collections/users/records"
        if step == "a":
            body = _json({"email": "bench-{n}@example.com", "password": PASSWORD, "passwordConfirm": PASSWORD,
                          "full_name": "Bench {n}"})
            return Workload([Request("POST", records, json_type, body)])
        if step == "b":
            return Workload([Request("POST", "/api/collections/users/auth-with-password", json_type,
                                     _json({"identity": u.email, "password": PASSWORD})) for u in self.users])
        if step == "c":
            return Workload([Request("GET", f"{records}/{u.id}", {"Authorization": u.token}) for u in self.users])
        if step == "d":
            return Workload([Request("PATCH", f"{records}/{u.id}", {"Authorization": u.token, **json_type},
                                     _json(_profile(u.id))) for u in self.users])
        if step == "e":
            before, after = multipart({}, "avatar", "avatar.png", "image/png")
            form = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
            return Workload([Request("PATCH", f"{records}/{u.id}", {"Authorization": u.token, **form},
                                     [before, 1, after]) for u in self.users], blobs=[self.avatar])
        if step == "f":
            self.refresh_avatars()
            return Workload([Request("GET", f"/api/files/users/{u.id}/{u.avatar}?token={u.file_token}", {})
                             for u in self.users], want_response=False)
        if step == "g":
            return Workload([Request("POST", "/api/collections/users/auth-refresh", {"Authorization": "{rt}"})],
                            tokens=self.sessions(), capture='"token":"([^"]+)"')
        if step == "i":
            return Workload([Request("GET", f"/api/files/users/{u.id}/{u.public_avatar}", {}) for u in self.users],
                            want_response=False)
        return None  # (h) is Gatehouse's own page


__all__ = ["STEPS", "GatehouseSteps", "PocketBaseSteps", "User", "avatar_png"]
