"""Running a coroutine to its end from synchronous code, wherever that code runs."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_coroutine"]

T = TypeVar("T")


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a new event loop and return its result (or raise its error).

    In a thread with no running loop this is ``asyncio.run``. Inside a running
    loop (a sync executor called from async code), ``asyncio.run`` would refuse,
    so the coroutine runs on a new loop in a helper thread, with this thread's
    context variables, while this thread waits.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: list[Any] = []
    failure: list[BaseException] = []
    ctx = contextvars.copy_context()

    def target() -> None:
        try:
            box.append(ctx.run(asyncio.run, coro))
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=target, name="runfox-coroutine", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    result: T = box[0]
    return result
