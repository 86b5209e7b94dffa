"""The app's services in one typed container: what handlers reach through :func:`services`.

``create_app`` builds it once; the data API's schema cache joins it when the app starts (it needs
the open database). Handlers never reach into ``app.state`` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

if TYPE_CHECKING:
    from gatehouse.auth.admin import AdminService
    from gatehouse.auth.service import AuthService
    from gatehouse.core.caller import Callers
    from gatehouse.core.config import Settings
    from gatehouse.core.db import Database
    from gatehouse.core.keyring import Keyring
    from gatehouse.core.keys import KeySet
    from gatehouse.dashboard.service import Dashboard
    from gatehouse.realtime.service import Realtime
    from gatehouse.rest.schema import SchemaCache
    from gatehouse.rest.watcher import SchemaWatcher
    from gatehouse.storage.render_cache import RenderCache
    from gatehouse.storage.service import StorageService


@dataclass
class Services:
    settings: Settings
    keys: KeySet
    callers: Callers
    database: Database
    auth: AuthService
    auth_admin: AdminService
    storage: StorageService
    render_cache: RenderCache
    realtime: Realtime
    dashboard: Dashboard
    #: The signing keys' rotation, followed by every process (core/keyring.py).
    keyring: Keyring
    #: Set when the app starts: the data API's schema cache, kept current by its watcher.
    rest_schema: SchemaWatcher | None = None

    @property
    def schema_cache(self) -> SchemaCache:
        if self.rest_schema is None:
            raise RuntimeError("the data API's schema cache is loaded when the app starts")
        return self.rest_schema.cache


def services(conn: HTTPConnection) -> Services:
    """The services of the app serving this request."""
    found: Services = conn.app.state.services
    return found
