"""Subject names, as functions so that every process spells them alike."""

from __future__ import annotations

from bus_schemas.events import (
    AudioChunk,
    ChannelHealth,
    Event,
    ExtractionRulesSet,
    LiveStreamClosed,
    LiveStreamOpened,
    MixerApplied,
    MixerCommand,
    ModelDeployed,
    Prediction,
    SampleExtracted,
    SampleLabelled,
    SourceAdded,
    SourceFailed,
    SourceLoaded,
    SourceRemoved,
    SourceUnloaded,
    SpeechMasked,
)

PREFIX = "tidzam"
AUDIO_ALL = f"{PREFIX}.audio.>"
PRED_ALL = f"{PREFIX}.pred.>"
SAMPLE_ALL = f"{PREFIX}.sample.>"
MIXER_ALL = f"{PREFIX}.mixer.>"
HEALTH_ALL = f"{PREFIX}.health.>"
MIXER_CMD_ALL = f"{PREFIX}.mixer.cmd.>"
MIXER_APPLIED_ALL = f"{PREFIX}.mixer.applied.>"
CTL_ALL = f"{PREFIX}.ctl.>"
SOURCE_ALL = f"{PREFIX}.ctl.source.>"
RULES = f"{PREFIX}.ctl.rules"
LABELS = f"{PREFIX}.ctl.label"
DLQ_ALL = f"{PREFIX}.dlq.>"
LIVE_IN = f"{PREFIX}.live.in"  # core NATS request/reply: gateway → live producer
MODEL_IN = f"{PREFIX}.model.in"  # core NATS request/reply: gateway → a classifier


def audio(source: str, channel: int) -> str:
    return f"{PREFIX}.audio.{source}.{channel}"


def audio_of_source(source: str) -> str:
    return f"{PREFIX}.audio.{source}.*"


def prediction(source: str, channel: int) -> str:
    return f"{PREFIX}.pred.{source}.{channel}"


def sample(source: str, channel: int) -> str:
    return f"{PREFIX}.sample.{source}.{channel}"


def mixer_cmd(source: str, channel: int) -> str:
    return f"{PREFIX}.mixer.cmd.{source}.{channel}"


def model_deployed(model_id: str | None = None) -> str:
    """``ModelDeployed`` events of one model, or of every model (a filter) when None."""
    return f"{PREFIX}.ctl.model.{model_id or '>'}"


def dlq(original_subject: str) -> str:
    """Dead letters keep the subject they came from after the prefix."""
    rest = original_subject
    if original_subject.startswith(PREFIX + "."):
        rest = original_subject[len(PREFIX) + 1 :]
    return f"{PREFIX}.dlq.{rest or 'unknown'}"


def subject_for(event: Event) -> str:
    """Where an event is published."""
    match event:
        case AudioChunk():
            return audio(event.source, event.channel)
        case Prediction():
            return prediction(event.source, event.channel)
        case SampleExtracted():
            return sample(event.source, event.channel)
        case ChannelHealth():
            return f"{PREFIX}.health.{event.source}.{event.channel}"
        case MixerCommand():
            return mixer_cmd(event.source, event.channel)
        case MixerApplied():
            return f"{PREFIX}.mixer.applied.{event.source}.{event.channel}"
        case SpeechMasked():
            return f"{PREFIX}.mixer.masked.{event.source}.{event.channel}"
        case SourceAdded() | SourceRemoved() | SourceLoaded() | SourceUnloaded() | SourceFailed():
            return f"{PREFIX}.ctl.source.{event.source}"
        case LiveStreamOpened() | LiveStreamClosed():
            return f"{PREFIX}.ctl.live.{event.source}"
        case ExtractionRulesSet():
            return RULES
        case ModelDeployed():
            return model_deployed(event.model_id)
        case SampleLabelled():
            return LABELS
    raise TypeError(f"no subject for {type(event).__name__}")
