"""The signed-in user's pages: the account page (profile details), its photo, and a new password.

The profile is read and written through ``gatehouse.profiles`` as the user (RLS decides), the
photo through ``StorageService`` as the user, the password through ``AuthService``.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gatehouse import profiles
from gatehouse.auth.forms import UserUpdateForm
from gatehouse.core.errors import GatehouseError
from gatehouse.profiles import Profile, ProfileError
from gatehouse.services import services
from gatehouse.web import avatars, providers
from gatehouse.web.forms import ProfileForm
from gatehouse.web.pages import auth, checked_form, client, page, signed_in_form, signed_in_page


async def account(request: Request) -> Response:
    session = await signed_in_page(request)
    if isinstance(session, Response):
        return session
    database, user_id = services(request).database, uuid.UUID(session.user_id)
    profile = await profiles.read(database, session.claims, user_id) or Profile(user_id)
    form = ProfileForm(full_name=profile.full_name or "", username=profile.username or "",
                       website=profile.website or "")
    user = session.user
    assert user is not None  # signed_in_page read it
    notice = {"password": "Password changed.", "profile": "Profile updated.",
              "identities": "Sign-in methods updated.", "mfa": "Two-step sign-in is off.",
              "passkeys": "Passkeys updated."}.get(
        request.query_params.get("changed", ""), ""
    )
    if request.method == "POST":
        data = await checked_form(request)
        if isinstance(data, Response):
            return data
        form = ProfileForm.parse({k: str(v) for k, v in data.items()})
        if not form.errors:
            try:
                await profiles.save_details(database, session.claims, user_id, **form.values())
                # Post/Redirect/Get: reloading the page must not send the form again
                return RedirectResponse("/account?changed=profile", status_code=303)
            except ProfileError as error:
                if not form.refused(error):
                    raise
    return page(
        request, "account.html", status=400 if form.errors else 200, form=form, notice=notice,
        email=session.claims.get("email", "") if session.claims else "",
        avatar=avatars.image_src(profile.avatar_url, avatars.SIZE,
                                 origin=services(request).settings.storage_public_url or ""),
        avatar_size=avatars.SIZE, avatar_origin=services(request).settings.storage_public_url or "",
        user_id=session.user_id,
        avatar_error=request.query_params.get("avatar_error", ""),
        avatar_notice="Photo updated." if request.query_params.get("avatar") == "updated" else "",
        identities=providers.identities(user), linking=services(request).settings.manual_linking,
        passkeys=await auth(request).passkeys.of_user(session.claims or {}),
        linkable=[p for p in providers.enabled(request) if p["name"] not in {i.provider for i in user.identities}],
    )


async def avatar(request: Request) -> Response:
    posted = await signed_in_form(request)
    if isinstance(posted, Response):
        return posted
    session, data = posted
    try:
        await avatars.replace(services(request).storage.objects, services(request).database, session.claims or {},
                              uuid.UUID(session.user_id), data.get("avatar"))
    except avatars.AvatarRefused as refused:
        return RedirectResponse("/account?" + urlencode({"avatar_error": refused.message}), status_code=303)
    return RedirectResponse("/account?avatar=updated", status_code=303)


async def new_password(request: Request) -> Response:
    session = await signed_in_page(request)
    if isinstance(session, Response):
        return session
    if request.method == "GET":
        return page(request, "password.html")
    data = await checked_form(request)
    if isinstance(data, Response):
        return data
    password = str(data.get("password", ""))
    try:
        await auth(request).account.update_user(
            session.claims or {}, UserUpdateForm(password=password), client(request), None
        )
    except GatehouseError as error:
        return page(request, "password.html", status=400, error=error.message)
    return RedirectResponse("/account?changed=password", status_code=303)
