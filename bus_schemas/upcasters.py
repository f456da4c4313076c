"""Pure functions that lift an old event body to the next schema version.

An upcaster takes the decoded body (a dict) of ``event_type`` at version N and
returns the body at version N+1. ``upcast`` chains them up to the current version
of the model, so stored events of any age are read by today's code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bus_schemas.errors import TidzamError

Body = dict[str, Any]
Upcaster = Callable[[Body], Body]



def _channel_health_v1(body: Body) -> Body:
    """v1 measured level, peak, clipping and ``silent``; v2 adds the noise floor, DC,
    hum (not measured then: None) and names ``silent`` ``dead``."""
    out = {k: v for k, v in body.items() if k != "silent"}
    out["dead"] = bool(body.get("silent", False))
    for name in ("noise_floor_dbfs", "dc_offset", "hum_db", "hum_hz", "origin_ns"):
        out.setdefault(name, None)
    return out


def _extraction_rules_v1(body: Body) -> Body:
    """v1 rules had no context, centring or cooldown: v2 reads them as none; v1's
    empty class list meant every class."""
    rules = []
    for rule in body.get("rules", []):
        rule = dict(rule)
        if not rule.get("classes"):
            rule["classes"] = ["*"]
        rule.setdefault("length_s", 0.5)  # v1's default, where v2's is the window
        rule.update(before_s=0.0, after_s=0.0, centred=False, cooldown_s=0.0)
        rules.append(rule)
    return {**body, "rules": rules}


def _sample_extracted_v1(body: Body) -> Body:
    """v1 kept the label and its confidence, not the vector, window or reason."""
    out = dict(body)
    out.setdefault("window_start_ns", body.get("start_ns", 0))
    out.setdefault("window_end_ns", body.get("end_ns", 0))
    out.setdefault("labels", [body.get("label", "")])
    out.setdefault("scores", [body.get("confidence", 0.0)])
    path = str(body.get("path", ""))
    out.setdefault("destination", path.split("/", 1)[0] if "/" in path else "samples")
    return out


def _prediction_v1(body: Body) -> Body:
    """v1 did not name the window's audio session."""
    return {**body, "origin_ns": None}


def _audio_chunk_v1(body: Body) -> Body:
    """v1 chunks passed the mixer untouched."""
    return {**body, "gain_db": 0.0, "muted": False}


def _mixer_command_v1(body: Body) -> Body:
    return {**body, "by": ""}


def _mixer_applied_v1(body: Body) -> Body:
    """v1 said when the stage applied a state (``at_ns``), not from which audio on."""
    return {**body, "origin": "default", "reason": "", "by": "",
            "from_ns": body.get("at_ns", 0)}


def _model_deployed_v1(body: Body) -> Body:
    """v1 deploys carried no digest: classifiers refuse them (deploy again)."""
    return {**body, "sha256": ""}


# (event_type, from_version) -> function producing from_version + 1.
# v1 is the first schema; upcasters are added here when a model's version is bumped.
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("ChannelHealth", 1): _channel_health_v1,
    ("ExtractionRulesSet", 1): _extraction_rules_v1,
    ("SampleExtracted", 1): _sample_extracted_v1,
    ("Prediction", 1): _prediction_v1,
    ("AudioChunk", 1): _audio_chunk_v1,
    ("MixerCommand", 1): _mixer_command_v1,
    ("MixerApplied", 1): _mixer_applied_v1,
    ("ModelDeployed", 1): _model_deployed_v1,
}


class UpcastError(TidzamError, ValueError):
    """No path from a stored version to the current one."""


def upcast(
    event_type: str,
    version: int,
    body: Body,
    current: int,
    registry: Mapping[tuple[str, int], Upcaster] | None = None,
) -> Body:
    """Lift ``body`` from ``version`` to ``current`` through the registered steps."""
    steps = UPCASTERS if registry is None else registry
    if version > current:
        raise UpcastError(
            f"{event_type} v{version} is newer than this code (v{current}): upgrade Tidzam"
        )
    while version < current:
        step = steps.get((event_type, version))
        if step is None:
            raise UpcastError(f"no upcaster for {event_type} v{version} -> v{version + 1}")
        body = step(dict(body))
        version += 1
    return body
