"""What each process of the stack is handed in its environment, and nothing more.

Secrets go only where they are used: a process's NATS URL carries its own role's
password (``tidzam_ctl.stack.nats``); the database URL goes to the projector (the
writer role) and the gateway (the reader role) alone; the Icecast source password to
the two processes that send to Icecast; a sink's URL and secret to that sink.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from projections.roles import PROJECTOR, READER
from tidzam_ctl.settings import SITE_FIELDS
from tidzam_ctl.stack import sinks
from tidzam_ctl.stack.nats import role_of

if TYPE_CHECKING:
    from tidzam_ctl.stack.stack import Stack

# The only processes that talk to Icecast as a source: nobody else gets its password.
ICECAST_WRITERS = ("relay", "sources")
SQL_ROLES = {"projector": PROJECTOR, "gateway": READER}  # the only ones given a database URL


def child_env(stack: Stack, name: str = "") -> dict[str, str]:
    """The environment of process ``name`` (empty: a command of the operator's)."""
    settings = stack.settings
    env = dict(os.environ)
    # One BLAS thread per process: scale by processes (more classifiers), not by
    # threads; several processes each spinning a BLAS pool on 2 cores collapse.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    env.update({
        "TIDZAM_HOME": str(stack.home),
        "TIDZAM_NATS_URL": (stack.nats.url_for(role_of(name)) if stack.nats and name
                            else stack.nats_url),  # a process: its own role's user
        "TIDZAM_MODEL_DIR": str(settings.model_dir),
        "TIDZAM_OVERLAP": str(settings.overlap),
    })
    env.pop("TIDZAM_DATABASE_URL", None)  # its password: for the two that use SQL
    if name in SQL_ROLES:
        env["TIDZAM_DATABASE_URL"] = stack.database_url_as(SQL_ROLES[name])
    if settings.gateway:
        env.update({"TIDZAM_GATEWAY_HOST": settings.gateway_host,
                    "TIDZAM_GATEWAY_PORT": str(stack.gateway_port),
                    "TIDZAM_GATEWAY_PUBLIC_READ": str(settings.gateway_public_read),
                    "TIDZAM_GATEWAY_CORS": settings.gateway_cors})
    if stack.jack is not None:
        env["JACK_DEFAULT_SERVER"] = stack.jack.name
        env["JACK_NO_START_SERVER"] = "1"
    if settings.archive_dir is not None:
        env["TIDZAM_ARCHIVE_DIR"] = str(settings.archive_dir.expanduser().absolute())
    env["TIDZAM_SAMPLES_DIR"] = str(settings.samples_root)
    env.update({f"TIDZAM_{k.upper()}": str(getattr(settings, k)) for k in SITE_FIELDS})
    sinks.restrict(env, stack.home, name)  # a sink's URL and secret: for it alone
    if stack.icecast is not None:
        env.update({"TIDZAM_ICECAST_HOST": stack.icecast.host,
                    "TIDZAM_ICECAST_PORT": str(stack.icecast.port)})
        if name in ICECAST_WRITERS:
            env["TIDZAM_ICECAST_SOURCE_PASSWORD"] = stack.icecast.source_password
    return env
