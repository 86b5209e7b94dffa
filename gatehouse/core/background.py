"""A task that runs beside the app for its whole life: started with it, cancelled when it stops."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel the tasks given (None is skipped) and wait until each has ended, whatever it raised:
    the stop of a background task."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


class Background:
    """Subclasses write ``_run`` (usually a loop that never returns) and name the task."""

    task_name = "gatehouse-background"

    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)

    async def _run(self) -> None:
        raise NotImplementedError
