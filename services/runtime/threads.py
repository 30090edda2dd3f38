"""Blocking work on a connection, from a coroutine: in a worker thread, and never abandoned.

``asyncio.to_thread`` returns at a cancellation while its thread runs on: a thread cannot be
stopped. A coroutine cancelled there (a service stopping, a publication given up) goes on to
its ``finally`` and closes the connection the thread is still using: SQLite then crashes the
whole process (a segmentation fault, seen in the statistics publisher), PostgreSQL breaks the
transaction halfway. ``finished_in_thread`` waits for the thread to finish, however often it
is cancelled meanwhile, and only then lets the cancellation go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")


async def finished_in_thread(work: Callable[..., _T], *args: Any) -> _T:
    """``work(*args)`` in a worker thread. If the task is cancelled meanwhile, the thread is
    let finish (its commit or rollback, its close) before the cancellation propagates; its
    own error, if any, is then dropped in favour of the cancellation."""
    running = asyncio.ensure_future(asyncio.to_thread(work, *args))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        while not running.done():
            try:
                await asyncio.wait({running})
            except asyncio.CancelledError:
                continue  # cancelled again: the thread still holds the connection
        if not running.cancelled():
            running.exception()  # retrieved: the cancellation is what the caller meets
        raise
