"""The dashboard's parts, built once per app over the auth service's own (hasher, policy,
limiter, throttle, secret box) and the admin service the admin API uses."""

from __future__ import annotations

from gatehouse.auth.admin import AdminService
from gatehouse.core.keys import KeySet
from gatehouse.dashboard.accounts import Accounts
from gatehouse.dashboard.sessions import Sessions


class Dashboard:
    def __init__(self, admin: AdminService, keys: KeySet) -> None:
        self.users = admin
        self.accounts = Accounts(admin.deps)
        self.sessions = Sessions(admin.deps, keys)
        self.development = admin.deps.settings.environment == "development"
