"""One fixed example per event type and version; tests/golden/v<N>/<Type>.msgpack
holds its encoded body as written by that schema version. Regenerate only when a
NEW version is added (never overwrite an old version's files):
``python -m tests.golden_events`` writes files that do not exist yet."""

from __future__ import annotations

from pathlib import Path

from bus_schemas import (
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
from bus_schemas.codec import encode_body

GOLDEN_DIR = Path(__file__).parent / "golden"
T0 = 1_700_000_000_000_000_000

EXAMPLES: list[Event] = [
    AudioChunk(source="herring", channel=3, seq=7, first_sample=336_000, start_ns=T0,
               sample_rate=48_000, samples=bytes(range(16)), final=False, gain_db=-6.0,
               muted=False),
    Prediction(source="herring", channel=3, window_start_ns=T0, window_end_ns=T0 + 500_000_000,
               model_id="selector", model_version="1.0.0", labels=("birds", "rain", "wind"),
               scores=(0.75, 0.125, 0.125), result=("birds",), origin_ns=T0 - 336_000 * 10**9
               // 48_000),
    SampleExtracted(sample_id="s-1", source="herring", channel=3, start_ns=T0 - 500_000_000,
                    end_ns=T0 + 1_000_000_000, window_start_ns=T0,
                    window_end_ns=T0 + 500_000_000, label="birds", confidence=0.75,
                    model_id="selector", model_version="1.0.0", labels=("birds", "rain"),
                    scores=(0.75, 0.25), reason="auto", destination="samples",
                    sample_rate=48_000, path="samples/birds/s-1.flac"),
    ChannelHealth(source="herring", channel=3, start_ns=T0, end_ns=T0 + 10**9, rms_dbfs=-40.5,
                  peak_dbfs=-3.0, clip_ratio=0.0, noise_floor_dbfs=-52.25, dc_offset=0.001,
                  hum_db=-31.5, hum_hz=60, dead=False, origin_ns=T0 - 7 * 10**9),
    MixerCommand(command_id="c-1", source="herring", channel=3, action="gain", gain_db=-6.0,
                 reason="wind", origin="auto", by="gain-controller", at_ns=T0),
    MixerApplied(command_id="c-1", source="herring", channel=3, muted=False, gain_db=-6.0,
                 origin="auto", reason="wind", by="gain-controller", stage="producer",
                 from_ns=T0 - 10**9, at_ns=T0),
    SpeechMasked(source="herring", channel=3, window_start_ns=T0, window_end_ns=T0 + 975 * 10**6,
                 score=0.875, model_id="selector", origin_ns=T0 - 7 * 10**9,
                 by="gain-controller", at_ns=T0 + 2 * 10**9),
    SourceAdded(source="herring", kind="archive", location="http://127.0.0.1:8000/h.ogg",
                channels=(0, 2), permanent=True, database="/data/herring", date_ns=T0,
                format="ogg", at_ns=T0),
    SourceRemoved(source="herring", at_ns=T0),
    SourceLoaded(source="herring", kind="file", location="/data/herring.ogg", channels=(0, 1),
                 sample_rate=48_000, permanent=True, at_ns=T0, attempt=1),
    SourceUnloaded(source="herring", reason="end of file", at_ns=T0),
    SourceFailed(source="herring", reason="connection refused", at_ns=T0, attempt=2,
                 will_retry=True),
    LiveStreamOpened(source="live-abc", client="sid-1", sample_rate=44_100, at_ns=T0),
    LiveStreamClosed(source="live-abc", reason="disconnect", at_ns=T0),
    ExtractionRulesSet(rules=(ExtractionRule(source="herring", channels=(1,),
                                             classes=("birds-*", "unknown"), rate="auto",
                                             before_s=1.0, after_s=0.25, centred=True,
                                             cooldown_s=30.0, destination="herring_birds"),
                              ExtractionRule(rate=0.25, length_s=2.0)), at_ns=T0, by="alice"),
    ModelDeployed(model_id="selector", model_version="1.0.0", sha256="5" * 64,
                  path="models/selector",
                  labels=("birds", "rain"), feature_params={"n_mels": 64, "kind": "logmel-v1"},
                  at_ns=T0),
    SampleLabelled(sample_id="s-1", label="birds-american_robin", previous_label="birds",
                   by="alice", at_ns=T0),
]


def golden_path(event: Event) -> Path:
    return GOLDEN_DIR / f"v{event.schema_version}" / f"{event.event_type}.msgpack"


def write_missing() -> list[Path]:
    written = []
    for event in EXAMPLES:
        path = golden_path(event)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_body(event))
            written.append(path)
    return written


if __name__ == "__main__":
    for p in write_missing():
        print("wrote", p)
