"""What a prediction tells the outside world, and which of it a sink sends.

A window's detections are its decided labels (``Prediction.result``), each with its
confidence: the label's score, or, for ``unknown`` (no class decided), the best
score of the window. Filters are shell-style patterns (``birds-*``) on the label
and on the source, and a minimum confidence. ``unknown`` is sent only when a label
pattern names it exactly: a catch-all ``*`` means "every class", not "also the
windows nothing was decided for".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Annotated, TypeVar

from pydantic import BeforeValidator, ValidationError
from pydantic_settings import BaseSettings, NoDecode

from bus.process import run_process
from bus_schemas import Prediction
from bus_schemas.errors import TidzamError

UNKNOWN = "unknown"
SEC = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _split(value: object) -> object:
    """``birds-*,frogs`` (an environment variable) → ``("birds-*", "frogs")``."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


# A comma-separated list of shell-style patterns in the environment.
Patterns = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split)]


def iso_utc(ns: int) -> str:
    """Nanoseconds since the epoch as ISO 8601 UTC, to the microsecond (``...Z``)."""
    when = _EPOCH + timedelta(microseconds=ns // 1_000)
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def confidence(prediction: Prediction, label: str) -> float:
    """The score of a decided label; for ``unknown``, the window's best score."""
    if label in prediction.labels:
        return float(prediction.score_of(label))
    return float(max(prediction.scores, default=0.0))


@dataclass(frozen=True)
class Detection:
    """One decided label of one window, as sent out."""

    source: str
    channel: int
    start_ns: int
    end_ns: int
    label: str
    confidence: float
    model_id: str
    model_version: str

    def as_json(self) -> dict[str, object]:
        return {"source": self.source, "channel": self.channel,
                "start": iso_utc(self.start_ns), "end": iso_utc(self.end_ns),
                "label": self.label, "confidence": round(self.confidence, 6),
                "model_id": self.model_id, "model_version": self.model_version}


def detections_of(prediction: Prediction) -> list[Detection]:
    """Every decided label of the window, unfiltered."""
    p = prediction
    return [Detection(p.source, p.channel, p.window_start_ns, p.window_end_ns, label,
                      confidence(p, label), p.model_id, p.model_version)
            for label in p.result]


@dataclass(frozen=True)
class DetectionFilter:
    labels: tuple[str, ...] = ("*",)
    min_confidence: float = 0.0
    sources: tuple[str, ...] = ("*",)

    def passes(self, d: Detection) -> bool:
        if not any(fnmatchcase(d.source, pattern) for pattern in self.sources):
            return False
        if d.confidence < self.min_confidence:
            return False
        if d.label == UNKNOWN:
            return UNKNOWN in self.labels
        return any(fnmatchcase(d.label, pattern) for pattern in self.labels)

    def pick(self, prediction: Prediction) -> list[Detection]:
        return [d for d in detections_of(prediction) if self.passes(d)]


class SinkConfigError(TidzamError):
    """A sink cannot start as configured; the message names what is wrong, never a
    value (URLs and secrets)."""


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], what: str, url_field: str,
                  error: type[SinkConfigError]) -> S:
    """``cls()`` from the environment, or ``error`` saying what is wrong."""
    try:
        settings = cls()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False))
        raise error(f"{what}: {problems}") from None
    if getattr(settings, url_field) is None:
        raise error(f"{what}: TIDZAM_{url_field.upper()} is not set")
    return settings


def run_sink(load: Callable[[], S], body: Callable[[S, asyncio.Event], Awaitable[None]]
             ) -> None:
    """A sink's ``main``: its settings, or one clear line and exit status 1."""
    try:
        settings = load()
    except SinkConfigError as exc:
        raise SystemExit(str(exc)) from None
    run_process(lambda stop: body(settings, stop))
