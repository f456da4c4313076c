"""The outbound sinks a stack runs (``consumers.sinks``): those an ``up`` saw configured.

``up`` run with ``TIDZAM_WEBHOOK_URL`` (or ``TIDZAM_MQTT_URL``) keeps that sink's
``TIDZAM_WEBHOOK_*`` variables in ``<home>/sinks.json`` (mode 0600: URLs and secrets),
so that ``check`` and later ``up`` commands run it from any shell; an empty URL forgets
the sink. Only the sink's own process gets its variables.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PREFIXES = {"webhook": "TIDZAM_WEBHOOK_", "mqtt": "TIDZAM_MQTT_"}


def _file(home: Path) -> Path:
    return home / "sinks.json"


def _kept(home: Path) -> dict[str, dict[str, str]]:
    path = _file(home)
    kept: dict[str, dict[str, str]] = json.loads(path.read_text()) if path.exists() else {}
    return kept


def recorded(home: Path) -> list[str]:
    """The sinks to run, by name (``webhook``, ``mqtt``)."""
    return sorted(_kept(home))


def record(home: Path, environ: dict[str, str]) -> None:
    """Keep each sink's variables when its URL is in ``environ`` (empty: forget it); a
    sink whose URL is absent keeps what was kept."""
    kept = _kept(home)
    named = [sink for sink, prefix in PREFIXES.items() if f"{prefix}URL" in environ]
    for sink in named:
        prefix = PREFIXES[sink]
        if environ[f"{prefix}URL"]:
            kept[sink] = {k: v for k, v in environ.items() if k.startswith(prefix)}
        else:
            kept.pop(sink, None)
    if named:
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(_file(home), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(kept, f)


def restrict(env: dict[str, str], home: Path, process: str) -> None:
    """No sink variable in ``env`` but those of ``process`` when it is ``sink-<name>``."""
    for prefix in PREFIXES.values():
        for key in [k for k in env if k.startswith(prefix)]:
            del env[key]
    if process.startswith("sink-"):
        env.update(_kept(home).get(process.removeprefix("sink-"), {}))
