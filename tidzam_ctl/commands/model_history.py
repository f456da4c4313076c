"""Which model versions are deployed: the ``ModelDeployed`` history of the CONTROL
stream, read over the bus (``bus.history``), with ``TIDZAM_MODEL_DIR`` as the first
deployment (what classifiers run before any deploy).
"""

from __future__ import annotations

import asyncio

from rich.console import Console

from bus.connect import BusError
from inference.deploying import baseline
from inference.registry import DeployHistory
from tidzam_ctl.errors import CliError
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack

console = Console(stderr=True, soft_wrap=True)

_HISTORY_TIMEOUT_S = 15.0


def bus_stack(settings: CtlSettings) -> Stack:
    from tidzam_ctl.commands.stack import require_bus

    stack = Stack(settings)
    require_bus(stack)
    return stack


async def read_history(stack: Stack, settings: CtlSettings) -> DeployHistory:
    from bus.connect import connect, ensure_streams
    from bus.history import read_deployments

    try:  # the client retries an unreachable server for ever: bound it
        nc = await asyncio.wait_for(connect(stack.nats_url, "tidzam_ctl-model"),
                                    _HISTORY_TIMEOUT_S)
    except TimeoutError as exc:
        raise CliError(f"NATS did not answer in {_HISTORY_TIMEOUT_S:.0f} s: is the stack up "
                       "(`tidzam_ctl status`)?") from exc
    try:
        await ensure_streams(nc.jetstream())
        events, _ = await asyncio.wait_for(read_deployments(nc.jetstream()),
                                           _HISTORY_TIMEOUT_S)
    finally:
        await nc.drain()
    return DeployHistory(events, baseline(settings.model_dir))


def history_or_none(settings: CtlSettings) -> DeployHistory | None:
    """The deploy history, or None (with a note) where the bus is not running."""
    stack = Stack(settings)
    if stack.embedded_nats and stack.pid_of("nats") is None:
        console.print("[yellow]the stack is not running: deployed versions unknown[/yellow]")
        return None
    try:
        return asyncio.run(read_history(stack, settings))
    except (CliError, BusError) as exc:
        console.print(f"[yellow]deployed versions unknown: {exc}[/yellow]")
        return None
