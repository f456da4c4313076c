"""The contract between every Tidzam process: events, codec, subjects, streams.

Pure: no I/O and no NATS import. Everything here is data or pure functions, so
any process (or a test) can use it without a server.
"""

from bus_schemas.codec import (
    HEADER_TYPE,
    HEADER_VERSION,
    MSG_ID_HEADER,
    DecodeError,
    decode,
    encode,
)
from bus_schemas.events import (
    EVENT_TYPES,
    AudioChunk,
    ChannelHealth,
    Event,
    ExtractionRule,
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

__all__ = [
    "EVENT_TYPES",
    "HEADER_TYPE",
    "HEADER_VERSION",
    "MSG_ID_HEADER",
    "AudioChunk",
    "ChannelHealth",
    "DecodeError",
    "Event",
    "ExtractionRule",
    "ExtractionRulesSet",
    "LiveStreamClosed",
    "LiveStreamOpened",
    "MixerApplied",
    "MixerCommand",
    "ModelDeployed",
    "Prediction",
    "SampleExtracted",
    "SampleLabelled",
    "SourceAdded",
    "SourceFailed",
    "SourceLoaded",
    "SourceRemoved",
    "SourceUnloaded",
    "SpeechMasked",
    "decode",
    "encode",
]
