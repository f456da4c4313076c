"""Every fact Tidzam records, as a frozen, versioned pydantic model (schema v1).

Conventions:
- times are integers in nanoseconds since the Unix epoch (UTC), taken from the
  audio (archive file name, capture time), never from a consumer's wall clock;
- ``source`` names are NATS subject tokens (``[A-Za-z0-9_-]+``), channels are
  0-based integers;
- ``msg_id()`` is the deterministic ``Nats-Msg-Id``: publishing the same fact twice
  stores it once (within the stream's duplicate window), and projections upsert on
  the same natural key beyond it.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Annotated, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from bus_schemas import pcm

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _check_token(value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use 1-64 letters, digits, '_' or '-' "
            "(it becomes part of a NATS subject)"
        )
    return value


Token = Annotated[str, AfterValidator(_check_token)]
Channel = Annotated[int, Field(ge=0, le=4095)]
TimeNs = Annotated[int, Field(ge=0)]


class Event(BaseModel):
    """Base of every event: immutable, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def msg_id(self) -> str:
        raise NotImplementedError(f"{type(self).__name__} must define its message id")


# --------------------------------------------------------------------------- audio


class AudioChunk(Event):
    """A run of mono PCM samples of one channel of one source.

    ``samples``: little-endian PCM, ``encoding`` s16le (int16) or f32le (float32),
    ``n_samples = len(samples) // sample_width``, at ``sample_rate`` Hz.
    ``first_sample`` is the index of the first sample since the source started
    (``seq`` 0 has ``first_sample`` 0), so consumers place fixed window grids on it.
    ``seq`` is gapless per source/channel within one load of the source (a
    session: a replayed file, a connection to a URL); it restarts at 0 with the
    next session, as does ``first_sample``. ``final`` marks the last chunk of a
    finite source (file end), so a consumer does not wait for a next chunk.
    """

    event_type: ClassVar[str] = "AudioChunk"

    source: Token
    channel: Channel
    seq: Annotated[int, Field(ge=0)]
    first_sample: Annotated[int, Field(ge=0)]
    start_ns: TimeNs
    sample_rate: Annotated[int, Field(gt=0, le=384_000)]
    encoding: Literal["s16le", "f32le"] = "s16le"
    samples: bytes
    final: bool = False

    @model_validator(mode="after")
    def _whole_samples(self) -> AudioChunk:
        if len(self.samples) % self.sample_width:
            raise ValueError(
                f"{len(self.samples)} bytes is not a whole number of {self.encoding} samples"
            )
        return self

    @property
    def sample_width(self) -> int:
        return 2 if self.encoding == "s16le" else 4

    @property
    def n_samples(self) -> int:
        return len(self.samples) // self.sample_width

    @property
    def end_sample(self) -> int:
        """Index one past the last sample of this chunk."""
        return self.first_sample + self.n_samples

    def time_of(self, sample_index: int) -> int:
        """UTC time in ns of a sample index on this source's grid."""
        offset = sample_index - self.first_sample
        return self.start_ns + offset * 1_000_000_000 // self.sample_rate

    def pcm_samples(self) -> pcm.Samples:
        """Samples as they travel, without a copy: int16 (s16le) or float32 (f32le)."""
        return pcm.samples_of(self.samples, self.encoding)

    def to_float32(self) -> npt.NDArray[np.float32]:
        """Samples as float32 in [-1, 1], shape (n_samples,)."""
        return pcm.to_float32(self.samples, self.encoding)

    @property
    def origin_ns(self) -> int:
        """Start time of the session's first sample: it names the session."""
        return self.start_ns - self.first_sample * 1_000_000_000 // self.sample_rate

    def msg_id(self) -> str:
        # Session-scoped: seq restarts with each load of a source. Replaying the same
        # recording from the same start gives the same ids (stored once); another
        # session never collides, even when its times overlap this one's.
        return f"audio.{self.source}.{self.channel}.{self.origin_ns}.{self.seq}"


# ----------------------------------------------------------------------- analysis


class Prediction(Event):
    """The classifier's output for one window of one channel.

    ``labels`` and ``scores`` are parallel and complete (every class of the model, in
    model order, not a top-k), so anyone can re-threshold later without the audio.
    ``result`` is the decision: the chosen label(s), or ``("unknown",)``.
    ``origin_ns`` names the audio session the window was cut from (its chunks'
    ``origin_ns``), so its audio can be found again in the AUDIO stream even when
    two sessions of a source overlap in time (v2; None in v1 events).
    """

    event_type: ClassVar[str] = "Prediction"
    schema_version: ClassVar[int] = 2

    source: Token
    channel: Channel
    window_start_ns: TimeNs
    window_end_ns: TimeNs
    model_id: Token
    model_version: Annotated[str, Field(min_length=1, max_length=64)]
    labels: tuple[str, ...]
    scores: tuple[float, ...]
    result: tuple[str, ...]
    origin_ns: TimeNs | None = None

    @model_validator(mode="after")
    def _parallel(self) -> Prediction:
        if len(self.labels) != len(self.scores):
            raise ValueError(f"{len(self.labels)} labels but {len(self.scores)} scores")
        if self.window_end_ns <= self.window_start_ns:
            raise ValueError("window_end_ns must be after window_start_ns")
        return self

    def score_of(self, label: str) -> float:
        return self.scores[self.labels.index(label)]

    def msg_id(self) -> str:
        return (
            f"pred.{self.model_id}@{self.model_version}."
            f"{self.source}.{self.channel}.{self.window_start_ns}"
        )


class SampleExtracted(Event):
    """A window saved as a training sample: FLAC audio + JSON sidecar (v2).

    ``start_ns``/``end_ns`` bound the saved audio (the window with its context, cut
    where the session's audio began or ended); ``window_*`` the window the model
    scored. ``labels``/``scores`` are the model's full vector; ``label`` the proposed
    one (the decision, or ``unknown``); ``reason`` why it was chosen: ``rate`` (a fixed
    probability), ``auto`` (the dynamic distribution), ``unknown``, or ``hesitant``
    (two classes within the margin). ``path``: relative to the samples folder.
    v1 kept only the label and its confidence: its vector reads back as that one
    class, its window as the sample's bounds.
    """

    event_type: ClassVar[str] = "SampleExtracted"
    schema_version: ClassVar[int] = 2

    sample_id: Annotated[str, Field(min_length=1, max_length=200)]
    source: Token
    channel: Channel
    start_ns: TimeNs
    end_ns: TimeNs
    window_start_ns: TimeNs
    window_end_ns: TimeNs
    label: str
    confidence: float
    model_id: Token
    model_version: str
    labels: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()
    reason: Literal["rate", "auto", "unknown", "hesitant"] = "rate"
    destination: str = "samples"
    sample_rate: Annotated[int, Field(ge=0, le=384_000)] = 0  # 0: not recorded (v1)
    path: str

    @model_validator(mode="after")
    def _consistent(self) -> SampleExtracted:
        if len(self.labels) != len(self.scores):
            raise ValueError(f"{len(self.labels)} labels but {len(self.scores)} scores")
        if self.end_ns <= self.start_ns:
            raise ValueError("end_ns must be after start_ns")
        return self

    def msg_id(self) -> str:
        return f"sample.{self.sample_id}"


class ChannelHealth(Event):
    """How healthy one channel's audio was over one interval (a chunk: about a second).

    Measured where the audio enters (``audio.health``), before any gain: levels in
    dBFS, ``clip_ratio`` the share of samples at full scale, ``noise_floor_dbfs`` the
    level between events, ``dc_offset`` the mean in full-scale units, ``hum_db`` the
    mains hum (``hum_hz``, 50 or 60 Hz and harmonics) relative to the interval's power,
    ``dead`` digital silence or a stuck value. v2; v1 had only level, peak, clipping
    and ``silent``: its other fields read back as None (not measured).
    """

    event_type: ClassVar[str] = "ChannelHealth"
    schema_version: ClassVar[int] = 2

    source: Token
    channel: Channel
    start_ns: TimeNs
    end_ns: TimeNs
    rms_dbfs: float
    peak_dbfs: float
    clip_ratio: Annotated[float, Field(ge=0.0, le=1.0)]
    noise_floor_dbfs: float | None
    dc_offset: Annotated[float, Field(ge=-1.0, le=1.0)] | None
    hum_db: Annotated[float, Field(le=0.0)] | None
    hum_hz: Literal[50, 60] | None
    dead: bool

    @model_validator(mode="after")
    def _ordered(self) -> ChannelHealth:
        if self.end_ns <= self.start_ns:
            raise ValueError("end_ns must be after start_ns")
        return self

    def msg_id(self) -> str:
        return f"health.{self.source}.{self.channel}.{self.start_ns}"


# -------------------------------------------------------------------------- mixer


class MixerCommand(Event):
    """A request to mute/unmute a channel or set its gain (automatic or manual)."""

    event_type: ClassVar[str] = "MixerCommand"

    command_id: Annotated[str, Field(min_length=1, max_length=128)]
    source: Token
    channel: Channel
    action: Literal["mute", "unmute", "gain"]
    gain_db: float = 0.0
    reason: str = ""
    origin: Literal["auto", "manual"] = "manual"
    at_ns: TimeNs

    def msg_id(self) -> str:
        return f"mixer.cmd.{self.command_id}"


class MixerApplied(Event):
    """A gain stage reports the state it applied after a command."""

    event_type: ClassVar[str] = "MixerApplied"

    command_id: Annotated[str, Field(min_length=1, max_length=128)]
    source: Token
    channel: Channel
    muted: bool
    gain_db: float
    stage: str
    at_ns: TimeNs

    def msg_id(self) -> str:
        return f"mixer.applied.{self.stage}.{self.command_id}"


# ------------------------------------------------------------------------ control


class SourceAdded(Event):
    """A user wants this source loaded (the desired state; ``SourceLoaded`` is the actual).

    ``location`` is a path or URL (http, https, rtsp, icecast). ``channels`` selects
    channels (empty: all). ``permanent`` sources are reloaded after a failure or an
    end, with backoff. ``database`` is a folder of archive files
    ``<name>-YYYY-MM-DD-HH-MM-SS.ext``; with ``date`` the source plays the archive
    from that instant on, and the live ``location`` once the archive is exhausted.
    """

    event_type: ClassVar[str] = "SourceAdded"

    source: Token
    kind: Literal["file", "url", "jack", "live", "archive"]
    location: str
    channels: tuple[int, ...] = ()
    permanent: bool = False
    database: str = ""
    date_ns: TimeNs | None = None
    format: Literal["ogg", "copy"] = "ogg"
    at_ns: TimeNs

    def msg_id(self) -> str:
        return f"ctl.source.added.{self.source}.{self.at_ns}"


class SourceRemoved(Event):
    """A user wants this source stopped and forgotten."""

    event_type: ClassVar[str] = "SourceRemoved"

    source: Token
    at_ns: TimeNs

    def msg_id(self) -> str:
        return f"ctl.source.removed.{self.source}.{self.at_ns}"


class SourceLoaded(Event):
    """A source started publishing audio."""

    event_type: ClassVar[str] = "SourceLoaded"

    source: Token
    kind: Literal["file", "url", "jack", "live", "archive"]
    location: str
    channels: tuple[int, ...]
    sample_rate: int
    permanent: bool = False
    at_ns: TimeNs
    attempt: Annotated[int, Field(ge=0)] = 0

    def msg_id(self) -> str:
        return f"ctl.source.loaded.{self.source}.{self.at_ns}"


class SourceUnloaded(Event):
    event_type: ClassVar[str] = "SourceUnloaded"

    source: Token
    reason: str
    at_ns: TimeNs

    def msg_id(self) -> str:
        return f"ctl.source.unloaded.{self.source}.{self.at_ns}"


class SourceFailed(Event):
    """A source stopped with an error; ``will_retry`` when it is permanent."""

    event_type: ClassVar[str] = "SourceFailed"

    source: Token
    reason: str
    at_ns: TimeNs
    attempt: Annotated[int, Field(ge=0)] = 0
    will_retry: bool = False

    def msg_id(self) -> str:
        return f"ctl.source.failed.{self.source}.{self.at_ns}"


class LiveStreamOpened(Event):
    event_type: ClassVar[str] = "LiveStreamOpened"

    source: Token
    client: str
    sample_rate: int
    at_ns: TimeNs

    def msg_id(self) -> str:
        return f"ctl.live.opened.{self.source}.{self.at_ns}"


class LiveStreamClosed(Event):
    event_type: ClassVar[str] = "LiveStreamClosed"

    source: Token
    reason: str
    at_ns: TimeNs

    def msg_id(self) -> str:
        return f"ctl.live.closed.{self.source}.{self.at_ns}"


_SOURCE_PATTERN = re.compile(r"^[A-Za-z0-9_*?-]{1,64}$")
_CLASS_PATTERN = re.compile(r"^[A-Za-z0-9_.*?-]{1,128}$")


def _check_source_pattern(value: str) -> str:
    if not _SOURCE_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a source name or pattern: use letters, digits, "
                         "'_', '-' and the wildcards '*' and '?'")
    return value


def _check_class_pattern(value: str) -> str:
    if not _CLASS_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a class pattern: use letters, digits, '_', '-', "
                         "'.' and the wildcards '*' and '?' (e.g. birds-*, unknown, *)")
    return value


SourcePattern = Annotated[str, AfterValidator(_check_source_pattern)]
ClassPattern = Annotated[str, AfterValidator(_check_class_pattern)]
Seconds = Annotated[float, Field(ge=0.0, le=60.0)]


class ExtractionRule(BaseModel):
    """Which windows to save as samples: where, what, how often, how long (v2).

    ``source`` and ``classes`` are shell-style patterns (``birds-*``, ``unknown``,
    ``*``); ``channels`` () is every channel. ``rate``: the probability of saving a
    matching window, or ``auto`` (rarer classes more often, ``unknown`` and windows
    where the model hesitates always). The sample is the window (or ``length_s``
    around its middle) with ``before_s`` and ``after_s`` of context; ``centred``
    keeps only windows whose sound sits in the middle (little energy at the edges);
    ``cooldown_s``: after a sample, a channel gives none for that long.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: SourcePattern = "*"
    channels: tuple[Channel, ...] = ()
    classes: Annotated[tuple[ClassPattern, ...], Field(min_length=1)] = ("*",)
    rate: Literal["auto"] | Annotated[float, Field(ge=0.0, le=1.0)] = "auto"
    length_s: Annotated[float, Field(gt=0.0, le=60.0)] | None = None  # None: the window
    before_s: Seconds = 0.5
    after_s: Seconds = 0.5
    centred: bool = False
    cooldown_s: Annotated[float, Field(ge=0.0, le=86_400.0)] = 5.0
    destination: Token = "samples"

    @model_validator(mode="after")
    def _unique_channels(self) -> ExtractionRule:
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"channel listed twice in {list(self.channels)}")
        return self

    @property
    def key(self) -> tuple[str, tuple[int, ...]]:
        """Where the rule applies: a set holds one rule per key."""
        return self.source, tuple(sorted(self.channels))

    def applies_to(self, source: str, channel: int) -> bool:
        return fnmatchcase(source, self.source) and (not self.channels
                                                     or channel in self.channels)

    def wants(self, label: str) -> bool:
        return any(fnmatchcase(label, pattern) for pattern in self.classes)


class ExtractionRulesSet(Event):
    """The whole rule set replaces the previous one (v2: rules of ``ExtractionRule`` v2).

    For a window, the rule that applies is the most specific one: a named source over
    a pattern (the longer its literal part, the more specific), then listed channels
    over every channel, fewer over more (``rule_for``)."""

    event_type: ClassVar[str] = "ExtractionRulesSet"
    schema_version: ClassVar[int] = 2

    rules: tuple[ExtractionRule, ...]
    at_ns: TimeNs
    by: str = ""

    @model_validator(mode="after")
    def _one_rule_per_key(self) -> ExtractionRulesSet:
        keys = [rule.key for rule in self.rules]
        if len(set(keys)) != len(keys):
            raise ValueError("two rules for the same source and channels")
        return self

    def rule_for(self, source: str, channel: int) -> ExtractionRule | None:
        """The most specific rule for a channel, None when no rule applies."""
        def specificity(rule: ExtractionRule) -> tuple[bool, int, bool, int]:
            literal = sum(c not in "*?" for c in rule.source)
            exact = literal == len(rule.source)
            return exact, literal, bool(rule.channels), -len(rule.channels)
        found = [r for r in self.rules if r.applies_to(source, channel)]
        return max(found, key=specificity) if found else None

    def msg_id(self) -> str:
        return f"ctl.rules.{self.at_ns}"


class ModelDeployed(Event):
    """A model version becomes the one classifiers use for ``model_id``."""

    event_type: ClassVar[str] = "ModelDeployed"

    model_id: Token
    model_version: str
    path: str
    labels: tuple[str, ...]
    feature_params: dict[str, float | int | str]
    at_ns: TimeNs

    def msg_id(self) -> str:
        return f"ctl.model.{self.model_id}@{self.model_version}.{self.at_ns}"


class SampleLabelled(Event):
    event_type: ClassVar[str] = "SampleLabelled"

    sample_id: str
    label: str
    previous_label: str = ""
    by: str = ""
    at_ns: TimeNs

    def msg_id(self) -> str:
        return f"ctl.label.{self.sample_id}.{self.at_ns}"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.event_type: cls
    for cls in (
        AudioChunk,
        Prediction,
        SampleExtracted,
        ChannelHealth,
        MixerCommand,
        MixerApplied,
        SourceAdded,
        SourceRemoved,
        SourceLoaded,
        SourceUnloaded,
        SourceFailed,
        LiveStreamOpened,
        LiveStreamClosed,
        ExtractionRulesSet,
        ModelDeployed,
        SampleLabelled,
    )
}
