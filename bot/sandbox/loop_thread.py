"""An asyncio loop on a thread of its own: how each emulator serves while the tests or the sandbox go on."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any


def serve_in_thread(
    name: str, opening: Callable[[], Coroutine[Any, Any, None]]
) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """Run `opening()` on a new loop in a new daemon thread, then the loop until `stop_thread`.

    Returns once `opening()` is done; what it raised (a port in use, say) is raised here, in the caller's thread.
    Tasks still pending when the loop stops are cancelled and awaited, so nothing is left half-run.
    """
    loop = asyncio.new_event_loop()
    opened: concurrent.futures.Future[None] = concurrent.futures.Future()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(opening())
        except BaseException as exc:  # handed to the caller of serve_in_thread
            loop.close()
            opened.set_exception(exc)
            return
        opened.set_result(None)
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    opened.result()
    return loop, thread


def stop_thread(
    loop: asyncio.AbstractEventLoop,
    thread: threading.Thread,
    closing: Coroutine[Any, Any, None] | None = None,
    timeout: float | None = 15.0,
) -> None:
    """Run `closing` on the loop (closing the server), then stop the loop and join its thread."""
    try:
        if closing is not None:
            asyncio.run_coroutine_threadsafe(closing, loop).result(timeout=timeout)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=timeout)
