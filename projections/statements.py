"""The events projected one by one, as upserts: control events (sources, models),
samples and their reviews, the mixer's history. ``statement_for`` gives the table,
the SQL and its parameters for one event; ``store.write_events`` runs them in stream
order inside the batch's transaction (a source's lifecycle depends on the order)."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from bus_schemas.events import (
    Event,
    LiveStreamClosed,
    LiveStreamOpened,
    MixerApplied,
    MixerCommand,
    ModelDeployed,
    SampleExtracted,
    SampleLabelled,
    SourceAdded,
    SourceFailed,
    SourceLoaded,
    SourceRemoved,
    SourceUnloaded,
    SpeechMasked,
)
from projections.times import to_datetime

_SOURCE_UP = """
INSERT INTO sources AS s (name, kind, location, channels, sample_rate, permanent, state,
                          since, attempts, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, 'loaded', %s, %s, %s)
ON CONFLICT (name) DO UPDATE SET
    kind = EXCLUDED.kind, location = EXCLUDED.location, channels = EXCLUDED.channels,
    sample_rate = EXCLUDED.sample_rate, permanent = EXCLUDED.permanent, state = 'loaded',
    since = EXCLUDED.since, attempts = EXCLUDED.attempts, updated_at = EXCLUDED.updated_at
"""

# repeated failures keep the time of the first one: "failing since 10:02, 5 attempts"
_SOURCE_DOWN = """
INSERT INTO sources AS s (name, state, since, last_error, attempts, updated_at)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (name) DO UPDATE SET
    since = CASE WHEN s.state = EXCLUDED.state THEN s.since ELSE EXCLUDED.since END,
    state = EXCLUDED.state, last_error = COALESCE(EXCLUDED.last_error, s.last_error),
    attempts = EXCLUDED.attempts, updated_at = EXCLUDED.updated_at
"""

# a request keeps the actual state of a source that is already running
_SOURCE_REQUESTED = """
INSERT INTO sources AS s (name, kind, location, channels, permanent, database, start_date,
                          format, wanted, state, since, attempts, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, true, 'requested', %s, 0, %s)
ON CONFLICT (name) DO UPDATE SET
    kind = EXCLUDED.kind, location = EXCLUDED.location, channels = EXCLUDED.channels,
    permanent = EXCLUDED.permanent, database = EXCLUDED.database,
    start_date = EXCLUDED.start_date, format = EXCLUDED.format, wanted = true,
    updated_at = EXCLUDED.updated_at
"""

_SOURCE_REMOVED = """
UPDATE sources SET wanted = false, state = 'removed', since = %s, updated_at = %s
 WHERE name = %s
"""

_MODEL_DEPLOYED = """
INSERT INTO models (model_id, version, labels, feature_params, path, deployed_at)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (model_id, version) DO UPDATE SET
    labels = EXCLUDED.labels, feature_params = EXCLUDED.feature_params,
    path = EXCLUDED.path, deployed_at = EXCLUDED.deployed_at
"""


_SAMPLE_EXTRACTED = """
INSERT INTO samples AS s (sample_id, time, end_time, window_start, window_end, source, channel,
                          label, confidence, model_id, model_version, labels, scores, reason,
                          destination, path, sample_rate)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (sample_id) DO UPDATE SET
    time = EXCLUDED.time, end_time = EXCLUDED.end_time, window_start = EXCLUDED.window_start,
    window_end = EXCLUDED.window_end, source = EXCLUDED.source, channel = EXCLUDED.channel,
    label = EXCLUDED.label, confidence = EXCLUDED.confidence, model_id = EXCLUDED.model_id,
    model_version = EXCLUDED.model_version, labels = EXCLUDED.labels, scores = EXCLUDED.scores,
    reason = EXCLUDED.reason, destination = EXCLUDED.destination, path = EXCLUDED.path,
    sample_rate = EXCLUDED.sample_rate
"""

# the latest review wins, whatever order the reviews are projected in
_SAMPLE_LABELLED = """
INSERT INTO samples AS s (sample_id, reviewed_label, previous_label, reviewed_by, reviewed_at)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (sample_id) DO UPDATE SET
    reviewed_label = EXCLUDED.reviewed_label, previous_label = EXCLUDED.previous_label,
    reviewed_by = EXCLUDED.reviewed_by, reviewed_at = EXCLUDED.reviewed_at
 WHERE s.reviewed_at IS NULL OR s.reviewed_at <= EXCLUDED.reviewed_at
"""


_MIXER_LOG = """
INSERT INTO mixer_log (id, kind, at, from_time, source, channel, action, gain_db, muted, origin,
                       reason, by, stage, command_id)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO NOTHING
"""


def statement_for(event: Event) -> tuple[str, str, tuple[Any, ...]] | None:
    """(table, SQL, parameters) for an event projected one by one (control events,
    samples, the mixer's), None if not projected."""
    if isinstance(event, MixerCommand):
        return "mixer_log", _MIXER_LOG, (
            event.msg_id(), "command", to_datetime(event.at_ns), None, event.source,
            event.channel, event.action, event.gain_db if event.action == "gain" else None,
            {"mute": True, "unmute": False}.get(event.action), event.origin,
            event.reason, event.by, None, event.command_id)
    if isinstance(event, MixerApplied):
        return "mixer_log", _MIXER_LOG, (
            event.msg_id(), "applied", to_datetime(event.at_ns), to_datetime(event.from_ns),
            event.source, event.channel, None, event.gain_db, event.muted, event.origin,
            event.reason, event.by, event.stage, event.command_id)
    if isinstance(event, SpeechMasked):
        return "mixer_log", _MIXER_LOG, (
            event.msg_id(), "masked", to_datetime(event.at_ns),
            to_datetime(event.window_start_ns), event.source, event.channel, None, None, None,
            None, f"speech {event.score:.2f} ({event.model_id})", event.by, None, None)
    if isinstance(event, SampleExtracted):
        return "samples", _SAMPLE_EXTRACTED, (
            event.sample_id, to_datetime(event.start_ns), to_datetime(event.end_ns),
            to_datetime(event.window_start_ns), to_datetime(event.window_end_ns),
            event.source, event.channel, event.label, event.confidence, event.model_id,
            event.model_version, list(event.labels), list(event.scores), event.reason,
            event.destination, event.path, event.sample_rate)
    if isinstance(event, SampleLabelled):
        return "samples", _SAMPLE_LABELLED, (
            event.sample_id, event.label or None, event.previous_label or None, event.by or None,
            to_datetime(event.at_ns))
    if isinstance(event, SourceAdded):
        at = to_datetime(event.at_ns)
        start = to_datetime(event.date_ns) if event.date_ns is not None else None
        return "sources", _SOURCE_REQUESTED, (
            event.source, event.kind, event.location, list(event.channels), event.permanent,
            event.database or None, start, event.format, at, at)
    if isinstance(event, SourceRemoved):
        at = to_datetime(event.at_ns)
        return "sources", _SOURCE_REMOVED, (at, at, event.source)
    if isinstance(event, SourceLoaded):
        at = to_datetime(event.at_ns)
        return "sources", _SOURCE_UP, (
            event.source, event.kind, event.location, list(event.channels),
            event.sample_rate, event.permanent, at, event.attempt, at)
    if isinstance(event, LiveStreamOpened):
        at = to_datetime(event.at_ns)
        return "sources", _SOURCE_UP, (
            event.source, "live", event.client, None, event.sample_rate, False, at, 0, at)
    if isinstance(event, SourceFailed):
        at = to_datetime(event.at_ns)
        return "sources", _SOURCE_DOWN, (
            event.source, "failed", at, event.reason, event.attempt, at)
    if isinstance(event, SourceUnloaded | LiveStreamClosed):
        at = to_datetime(event.at_ns)
        return "sources", _SOURCE_DOWN, (event.source, "unloaded", at, None, 0, at)
    if isinstance(event, ModelDeployed):
        return "models", _MODEL_DEPLOYED, (
            event.model_id, event.model_version, list(event.labels),
            Jsonb(event.feature_params), event.path, to_datetime(event.at_ns))
    return None
