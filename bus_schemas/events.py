"""Every fact Tidzam records, as a frozen, versioned pydantic model.

This module holds the events of the AUDIO and EVENTS streams (audio, analysis,
health, samples, mixer) and ``EVENT_TYPES``, the registry of every type; the
CONTROL stream's are in ``control.py``, the base and shared field types in
``base.py`` (all re-exported here). Conventions: ``base.py``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from bus_schemas import pcm
from bus_schemas.base import Channel, Event, Label, TimeNs, Token
from bus_schemas.control import (
    ClassPattern,
    ExtractionRule,
    ExtractionRulesSet,
    LiveStreamClosed,
    LiveStreamOpened,
    ModelDeployed,
    SampleLabelled,
    SourceAdded,
    SourceFailed,
    SourceLoaded,
    SourcePattern,
    SourceRemoved,
    SourceUnloaded,
)

__all__ = [
    "EVENT_TYPES", "AudioChunk", "Channel", "ChannelHealth", "ClassPattern", "Event",
    "ExtractionRule", "ExtractionRulesSet", "LiveStreamClosed", "LiveStreamOpened",
    "MixerApplied", "MixerCommand", "ModelDeployed", "Prediction", "SampleExtracted",
    "SampleLabelled", "SourceAdded", "SourceFailed", "SourceLoaded", "SourcePattern",
    "SourceRemoved", "SourceUnloaded", "SpeechMasked", "TimeNs", "Token",
]

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
    schema_version: ClassVar[int] = 2

    source: Token
    channel: Channel
    seq: Annotated[int, Field(ge=0)]
    first_sample: Annotated[int, Field(ge=0)]
    start_ns: TimeNs
    sample_rate: Annotated[int, Field(gt=0, le=384_000)]
    encoding: Literal["s16le", "f32le"] = "s16le"
    samples: bytes
    final: bool = False
    gain_db: Annotated[float, Field(ge=pcm.GAIN_DB_MIN, le=pcm.GAIN_DB_MAX)] = 0.0
    muted: bool = False

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
        """Samples as they travel (raw, before the mixer), without a copy: int16 (s16le)
        or float32 (f32le)."""
        return pcm.samples_of(self.samples, self.encoding)

    def heard_samples(self) -> pcm.Samples:
        """Samples as the mixer passes them (``gain_db``, ``muted``): what is analysed,
        relayed and played; the same type as ``pcm_samples``."""
        return pcm.with_gain(self.pcm_samples(), self.gain_db, self.muted)

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
    labels: tuple[Label, ...]
    scores: tuple[float, ...]
    result: tuple[Label, ...]
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
    label: Annotated[str, Field(max_length=128)]
    confidence: float
    model_id: Token
    model_version: Annotated[str, Field(min_length=1, max_length=64)]
    labels: tuple[Label, ...] = ()
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
    ``dead`` digital silence or a stuck value; ``origin_ns`` the audio session. v2; v1
    had only level, peak, clipping and ``silent``: its other fields read back as None
    (not measured).
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
    origin_ns: TimeNs | None = None  # the audio session (AudioChunk.origin_ns)

    @model_validator(mode="after")
    def _ordered(self) -> ChannelHealth:
        if self.end_ns <= self.start_ns:
            raise ValueError("end_ns must be after start_ns")
        return self

    def msg_id(self) -> str:
        # session-scoped as the audio: two sessions of a source that overlap in time are
        # both stored; a replay of one is stored once
        return f"health.{self.source}.{self.channel}.{self.origin_ns}.{self.start_ns}"


# -------------------------------------------------------------------------- mixer


MixerGain = Annotated[float, Field(ge=pcm.GAIN_DB_MIN, le=pcm.GAIN_DB_MAX)]


class MixerCommand(Event):
    """A request for a channel's mixer state (v2): ``gain`` (to ``gain_db``), ``mute``,
    ``unmute``, or ``auto`` (a manual setting released: automatic control again).

    ``origin`` ``manual`` (a person, ``by``) pins the channel until an ``auto`` command;
    ``auto`` commands (the gain controller) apply only to channels not pinned.
    ``at_ns`` is when it was decided: the wall clock for a person, the audio time of
    the evidence for the controller (so a replay decides the same command, stored
    once); the gain stage applies it from the next chunk (``MixerApplied.from_ns``)."""

    event_type: ClassVar[str] = "MixerCommand"
    schema_version: ClassVar[int] = 2

    command_id: Annotated[str, Field(min_length=1, max_length=128)]
    source: Token
    channel: Channel
    action: Literal["mute", "unmute", "gain", "auto"]
    gain_db: MixerGain = 0.0
    reason: str = ""
    origin: Literal["auto", "manual"] = "manual"
    by: str = ""
    at_ns: TimeNs

    @model_validator(mode="after")
    def _auto_is_a_release(self) -> MixerCommand:
        if self.action == "auto" and self.origin != "manual":
            raise ValueError("only a manual command releases a channel to auto")
        return self

    def msg_id(self) -> str:
        return f"mixer.cmd.{self.command_id}"


class MixerApplied(Event):
    """The gain stage applied a new state to a channel, from ``from_ns`` (audio time,
    the first chunk stamped with it) on (v2). ``command_id``, ``origin``, ``reason``:
    the command that decided it ("" for the default 0 dB)."""

    event_type: ClassVar[str] = "MixerApplied"
    schema_version: ClassVar[int] = 2

    command_id: Annotated[str, Field(max_length=128)]
    source: Token
    channel: Channel
    muted: bool
    gain_db: MixerGain
    origin: Literal["auto", "manual", "default"] = "default"
    reason: str = ""
    by: str = ""
    stage: str
    from_ns: TimeNs
    at_ns: TimeNs

    def msg_id(self) -> str:
        return f"mixer.applied.{self.stage}.{self.source}.{self.channel}.{self.from_ns}"


class SpeechMasked(Event):
    """A window that privacy (``TIDZAM_PRIVACY=mask``) silences in what is heard (the
    Icecast relay, JACK) and, as the site chooses, in the archive: decided as speech,
    or a speech class scoring at least the threshold (``score``: its best speech
    score). Published once per window by the gain controller; ``mixer ls`` counts them."""

    event_type: ClassVar[str] = "SpeechMasked"

    source: Token
    channel: Channel
    window_start_ns: TimeNs
    window_end_ns: TimeNs
    score: float
    model_id: Token
    origin_ns: TimeNs | None = None
    by: str = ""
    at_ns: TimeNs

    def msg_id(self) -> str:
        # one per window, whichever model (or replay) saw it first
        return f"mixer.masked.{self.source}.{self.channel}.{self.window_start_ns}"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.event_type: cls
    for cls in (
        AudioChunk,
        Prediction,
        SampleExtracted,
        ChannelHealth,
        MixerCommand,
        MixerApplied,
        SpeechMasked,
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
