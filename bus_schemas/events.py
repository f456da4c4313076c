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
    """

    event_type: ClassVar[str] = "Prediction"

    source: Token
    channel: Channel
    window_start_ns: TimeNs
    window_end_ns: TimeNs
    model_id: Token
    model_version: Annotated[str, Field(min_length=1, max_length=64)]
    labels: tuple[str, ...]
    scores: tuple[float, ...]
    result: tuple[str, ...]

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
    """A window saved to disk as a training sample (audio file + metadata)."""

    event_type: ClassVar[str] = "SampleExtracted"

    sample_id: Annotated[str, Field(min_length=1, max_length=200)]
    source: Token
    channel: Channel
    start_ns: TimeNs
    end_ns: TimeNs
    label: str
    confidence: float
    model_id: Token
    model_version: str
    path: str

    def msg_id(self) -> str:
        return f"sample.{self.sample_id}"


class ChannelHealth(Event):
    """Level statistics of one channel over one interval."""

    event_type: ClassVar[str] = "ChannelHealth"

    source: Token
    channel: Channel
    start_ns: TimeNs
    end_ns: TimeNs
    rms_dbfs: float
    peak_dbfs: float
    clip_ratio: Annotated[float, Field(ge=0.0, le=1.0)]
    silent: bool

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


class ExtractionRule(BaseModel):
    """Which windows to save as samples: where, what, how often, how long."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = "*"
    channels: tuple[int, ...] = ()
    classes: tuple[str, ...] = ()
    rate: Literal["auto"] | Annotated[float, Field(ge=0.0, le=1.0)] = "auto"
    length_s: Annotated[float, Field(gt=0.0, le=60.0)] = 0.5
    destination: str = "samples"


class ExtractionRulesSet(Event):
    """The whole rule set replaces the previous one."""

    event_type: ClassVar[str] = "ExtractionRulesSet"

    rules: tuple[ExtractionRule, ...]
    at_ns: TimeNs

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
