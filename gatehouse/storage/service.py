"""Storage's services, composed once: what the handlers reach through ``services(request).storage``.

Each noun has its own module: ``buckets`` (settings and the remembered-bucket rule),
``objects`` (find, list, remove, upload, move, copy), ``signing`` (signed URLs),
``renders`` (limits on image renders) and ``resumable`` (TUS uploads). They return the values
of ``storage.models``; the handlers in ``storage.api`` parse requests into ``storage.forms``
and render ``storage.wire``.
"""

from __future__ import annotations

from gatehouse.core.config import Settings
from gatehouse.core.db import Database
from gatehouse.core.keys import KeySet
from gatehouse.storage.backends.base import Backend
from gatehouse.storage.buckets import Buckets
from gatehouse.storage.objects import Objects
from gatehouse.storage.renders import Renders
from gatehouse.storage.resumable import ResumableUploads
from gatehouse.storage.signing import Signing


class StorageService:
    def __init__(self, database: Database, backend: Backend, settings: Settings, keys: KeySet) -> None:
        self.db = database
        self.backend = backend
        self.settings = settings
        self.buckets = Buckets(database, settings)
        self.objects = Objects(database, backend, settings, self.buckets)
        self.signing = Signing(keys, self.objects)
        self.renders = Renders(database, backend, settings)
        self.resumable = ResumableUploads(database, backend, settings, self.buckets, self.objects)
