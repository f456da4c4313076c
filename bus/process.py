"""How every long-running Tidzam process starts and stops.

Logging to stderr (the stack sends it to ``<home>/logs``) and a stop event set by
SIGTERM/SIGINT: the batch in hand finishes, then the process drains and exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable


def stop_event_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run_process(body: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``body(stop)`` until it returns; ``stop`` is set on SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def go() -> None:
        await body(stop_event_on_signals())

    asyncio.run(go())
