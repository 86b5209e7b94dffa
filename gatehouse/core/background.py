"""A task that runs beside the app for its whole life: started with it, cancelled when it stops."""

from __future__ import annotations

import asyncio
import contextlib


class Background:
    """Subclasses write ``_run`` (usually a loop that never returns) and name the task."""

    task_name = "gatehouse-background"

    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        raise NotImplementedError
