"""The account page's photo: its URL names an object of the avatars bucket or nothing, and a new
photo goes to storage and into the profile as the signed-in user."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.datastructures import Headers, UploadFile

from gatehouse.core.db import Database
from gatehouse.core.errors import GatehouseError
from gatehouse.profiles import ProfileError
from gatehouse.web import avatars
from tests.support import png

# -- the avatar's URL: an object name in the avatars bucket, encoded, or no image ---------------------

AVATAR_QUERY = "?width=160&height=160&resize=cover"
HOSTILE_AVATARS = [
    "../../auth/v1/user",  # traversal out of the bucket to another same-origin URL
    "x/../../../_inbox/messages",
    "./a.png",
    "https://evil.example/a.png",  # absolute URLs
    "//evil.example/a.png",
    "/auth/v1/user",
    "javascript:alert(1)",  # schemes
    "data:image/svg+xml,<svg onload=alert(1)>",
    "JaVaScRiPt:alert(1)",
    "..%2F..%2Fauth%2Fv1%2Fuser",  # encoded slashes and dots
    "%2e%2e/%2e%2e/auth/v1/user",
    "a.png?x=/../../auth/v1/user",  # query and fragment tricks
    "a.png#/../../x",
    "a.png?",
    "a\\..\\..\\auth",
    "a.png\nb",
    "",
]


@pytest.mark.parametrize("value", HOSTILE_AVATARS)
def test_an_avatar_url_that_is_not_an_object_name_shows_no_image(value: str) -> None:
    assert avatars.object_name(value) is None
    assert avatars.image_src(value, 160) is None


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("1f0c-aa11.png", "1f0c-aa11.png"),
        ("folder/my photo é.png", "folder/my%20photo%20%C3%A9.png"),
        ('a&b"c<d>.png', "a%26b%22c%3Cd%3E.png"),
        ("0.123456.jpg", "0.123456.jpg"),
    ],
)
def test_an_avatar_object_name_is_encoded_as_a_path(value: str, path: str) -> None:
    assert avatars.image_src(value, 160) == f"/storage/v1/render/image/public/avatars/{path}{AVATAR_QUERY}"


# -- replacing the photo -------------------------------------------------------------------------------


class FakeStorage:
    """Keeps what was uploaded, or refuses every upload with ``refusal``."""

    def __init__(self, refusal: GatehouseError | None = None) -> None:
        self.refusal = refusal
        self.uploads: list[tuple[str, str, bytes, dict[str, Any]]] = []

    async def upload(
        self, claims: dict[str, Any], bucket_id: str, name: str, stream: AsyncIterator[bytes], *,
        content_type: str | None, content_length: int | None, headers: dict[str, str], upsert: bool,
    ) -> dict[str, str]:
        if self.refusal is not None:
            raise self.refusal
        body = b"".join([chunk async for chunk in stream])
        self.uploads.append((bucket_id, name, body, {"claims": claims, "content_type": content_type,
                                                     "headers": headers, "upsert": upsert}))
        return {"Key": f"{bucket_id}/{name}"}


def image(content_type: str = "image/png", filename: str = "me.png", body: bytes | None = None) -> UploadFile:
    data = png() if body is None else body
    return UploadFile(io.BytesIO(data), size=len(data), filename=filename, headers=Headers({"content-type": content_type}))


async def new_user(db: Database) -> uuid.UUID:
    user_id = uuid.uuid4()
    await db.admin.execute(
        "INSERT INTO auth.users (id, aud, role, email, raw_user_meta_data, raw_app_meta_data) "
        "VALUES ($1, 'authenticated', 'authenticated', $2, '{}', '{}')", user_id, f"{user_id}@example.com",
    )
    return user_id


def claims_for(user_id: uuid.UUID) -> dict[str, Any]:
    return {"sub": str(user_id), "role": "authenticated", "aud": "authenticated"}


async def test_a_new_photo_is_stored_and_named_in_the_profile(db: Database) -> None:
    user = await new_user(db)
    storage = FakeStorage()
    name = await avatars.replace(storage, db, claims_for(user), user, image())
    [(bucket, stored_name, body, options)] = storage.uploads
    assert (bucket, stored_name, body) == ("avatars", name, png())
    assert name.startswith(f"{user}-") and name.endswith(".png")
    assert options == {"claims": claims_for(user), "content_type": "image/png",
                       "headers": {"cache-control": "max-age=3600"}, "upsert": False}
    assert await db.admin.fetchval("SELECT avatar_url FROM public.profiles WHERE id = $1", user) == name
    again = await avatars.replace(storage, db, claims_for(user), user, image("image/webp", "me.webp"))
    assert again != name and again.endswith(".webp")  # a new name: no browser shows a cached old photo


@pytest.mark.parametrize(
    ("upload", "message"),
    [
        (None, "Choose an image to upload."),
        ("not a file", "Choose an image to upload."),
        ("no name", "Choose an image to upload."),
        ("application/pdf", "Upload a PNG, JPEG, GIF or WebP image."),
    ],
)
async def test_what_is_not_an_image_file_is_refused_before_storage(db: Database, upload: str | None,
                                                                   message: str) -> None:
    user = await new_user(db)
    storage = FakeStorage()
    field: object = {"no name": image(filename=""), "application/pdf": image("application/pdf", "a.pdf")}.get(
        upload or "", upload)
    with pytest.raises(avatars.AvatarRefused) as caught:
        await avatars.replace(storage, db, claims_for(user), user, field)
    assert caught.value.message == message and storage.uploads == []


@pytest.mark.parametrize(
    ("refusal", "message"),
    [
        (GatehouseError("EntityTooLarge", "too big", status=413), "That image is larger than 2 MB. Pick a smaller one."),
        (GatehouseError("InvalidMimeType", "not an image", status=415),
         "That file is not a PNG, JPEG, GIF or WebP image."),
        (GatehouseError("Unauthorized", "new row violates row-level security policy", status=403),
         "new row violates row-level security policy"),
    ],
)
async def test_storage_refusals_become_the_pages_message(db: Database, refusal: GatehouseError, message: str) -> None:
    user = await new_user(db)
    with pytest.raises(avatars.AvatarRefused) as caught:
        await avatars.replace(FakeStorage(refusal), db, claims_for(user), user, image())
    assert caught.value.message == message
    assert await db.admin.fetchval("SELECT avatar_url FROM public.profiles WHERE id = $1", user) is None


async def test_the_profile_is_written_as_the_user_so_rls_decides(db: Database) -> None:
    alice, bob = await new_user(db), await new_user(db)
    with pytest.raises(ProfileError) as caught:
        await avatars.replace(FakeStorage(), db, claims_for(alice), bob, image())
    assert caught.value.code == "profile_forbidden"
    assert await db.admin.fetchval("SELECT avatar_url FROM public.profiles WHERE id = $1", bob) is None
