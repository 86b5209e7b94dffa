"""The realtime change feed's harness: a started feed that records what it delivers, the request pool."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import asyncpg
import pytest

from gatehouse.core.db import AUTHENTICATOR, Database, with_credentials
from gatehouse.core.keys import KeySet
from gatehouse.realtime.feed import ChangeFeed
from gatehouse.realtime.models import Change
from tests.support import eventually

_names = itertools.count(1)


class Received:
    """Everything a feed delivered, in order, and the batches it came in."""

    def __init__(self) -> None:
        self.batches: list[list[Change]] = []

    async def __call__(self, changes: list[Change]) -> None:
        self.batches.append(changes)

    @property
    def changes(self) -> list[Change]:
        return [change for batch in self.batches for change in batch]

    def of(self, table: str) -> list[Change]:
        return [change for change in self.changes if change.table == table]

    async def wait(self, table: str, count: int, timeout: float = 10.0) -> list[Change]:
        """The first ``count`` changes of ``table``, once that many have arrived."""
        await eventually(lambda: len(self.of(table)) >= count, timeout)
        return self.of(table)[:count]


def new_table() -> str:
    return f"rt{next(_names)}"


async def published_table(db: Database, columns: str, *, name: str | None = None) -> str:
    """Create ``public.<name> (<columns>)``, readable by the request roles, and publish it."""
    table = name or new_table()
    await db.admin.execute(
        f"CREATE TABLE public.{table} ({columns}); "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON public.{table} TO anon, authenticated, service_role; "
        f"ALTER PUBLICATION supabase_realtime ADD TABLE public.{table}"
    )
    return table


@pytest.fixture
def got() -> Received:
    """What ``feed`` delivers."""
    return Received()


@pytest.fixture
async def feed(db: Database, got: Received) -> AsyncIterator[ChangeFeed]:
    """A started feed on the admin pool (fast retries), delivering to ``got``."""
    started = ChangeFeed(db.admin, keepalive=0.2, retry_initial=0.05, retry_max=0.5)
    started.subscribe(got)
    await started.start()
    yield started
    await started.stop()
    assert db.admin.get_idle_size() == db.admin.get_size()  # every connection given back


@pytest.fixture(scope="module")
async def request_pool(database_url: str, keys: KeySet) -> AsyncIterator[asyncpg.Pool]:
    """A pool connected as ``authenticator``, as the request pool is."""
    pool = await asyncpg.create_pool(
        with_credentials(database_url, AUTHENTICATOR, keys.authenticator_password), min_size=1, max_size=2
    )
    yield pool
    await pool.close()
