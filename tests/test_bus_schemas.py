from __future__ import annotations

import msgpack
import numpy as np
import pytest
from pydantic import ValidationError

from bus_schemas import EVENT_TYPES, AudioChunk, DecodeError, Prediction, decode, encode
from bus_schemas.codec import HEADER_TYPE, HEADER_VERSION, MSG_ID_HEADER
from bus_schemas.subjects import dlq, subject_for
from bus_schemas.upcasters import UpcastError, upcast
from tests.golden_events import EXAMPLES, golden_path


def test_every_event_type_has_a_golden_example() -> None:
    assert {e.event_type for e in EXAMPLES} == set(EVENT_TYPES)


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.event_type)
def test_golden_body_decodes_to_the_example_and_reencodes_identically(event) -> None:  # type: ignore[no-untyped-def]
    body = golden_path(event).read_bytes()
    headers = {HEADER_TYPE: event.event_type, HEADER_VERSION: str(event.schema_version)}
    assert decode(headers, body) == event
    assert encode(event)[1] == body


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.event_type)
def test_roundtrip_headers_and_subject(event) -> None:  # type: ignore[no-untyped-def]
    headers, body = encode(event)
    assert headers[MSG_ID_HEADER] == event.msg_id()
    assert decode(headers, body) == event
    assert subject_for(event).startswith("tidzam.")


def test_events_are_frozen() -> None:
    with pytest.raises(ValidationError):
        EXAMPLES[0].seq = 9  # type: ignore[attr-defined,misc]


def test_decode_errors_say_why() -> None:
    chunk = EXAMPLES[0]
    headers, body = encode(chunk)
    with pytest.raises(DecodeError, match="missing Tidzam-Type"):
        decode({}, body)
    with pytest.raises(DecodeError, match="unknown event type 'Nope'"):
        decode({HEADER_TYPE: "Nope"}, body)
    with pytest.raises(DecodeError, match="not msgpack"):
        decode(headers, b"\xc1")
    with pytest.raises(DecodeError, match="not a map"):
        decode(headers, msgpack.packb([1, 2]))
    with pytest.raises(DecodeError, match="invalid AudioChunk v1: source"):
        decode(headers, msgpack.packb({**chunk.model_dump(), "source": "a.b"}))
    with pytest.raises(DecodeError, match="newer than this code"):
        decode({**headers, HEADER_VERSION: "2"}, body)


def test_upcasters_chain_to_the_current_version() -> None:
    registry = {
        ("Prediction", 1): lambda b: {**b, "scores": [float(s) for s in b["probs"]]},
        ("Prediction", 2): lambda b: {k: v for k, v in b.items() if k != "probs"},
    }
    assert upcast("Prediction", 1, {"probs": [1]}, 3, registry) == {"scores": [1.0]}
    with pytest.raises(UpcastError, match="no upcaster for Prediction v3"):
        upcast("Prediction", 3, {}, 4, registry)


def test_a_v0_body_is_read_through_an_upcaster() -> None:
    pred = EXAMPLES[1]
    assert isinstance(pred, Prediction)
    old = pred.model_dump()
    old["probs"] = old.pop("scores")  # pretend v0 named the vector differently
    registry = {("Prediction", 0): lambda b: {**{k: v for k, v in b.items() if k != "probs"},
                                              "scores": b["probs"]}}
    headers = {HEADER_TYPE: "Prediction", HEADER_VERSION: "0"}
    assert decode(headers, msgpack.packb(old), upcasters=registry) == pred


def test_audio_chunk_samples_and_times() -> None:
    pcm = (np.arange(480, dtype="<i2") * 10).tobytes()
    chunk = AudioChunk(source="s", channel=0, seq=1, first_sample=480, start_ns=10**18,
                       sample_rate=48_000, samples=pcm)
    assert chunk.n_samples == 480 and chunk.end_sample == 960
    assert chunk.time_of(480 + 48) == 10**18 + 1_000_000
    assert chunk.to_float32()[1] == pytest.approx(10 / 32768)
    with pytest.raises(ValidationError, match="whole number"):
        AudioChunk(source="s", channel=0, seq=0, first_sample=0, start_ns=0,
                   sample_rate=48_000, samples=b"\0\0\0")


def test_prediction_vectors_must_be_parallel() -> None:
    with pytest.raises(ValidationError, match="2 labels but 1 scores"):
        Prediction(source="s", channel=0, window_start_ns=0, window_end_ns=1, model_id="m",
                   model_version="1", labels=("a", "b"), scores=(1.0,), result=("a",))


def test_dlq_subject_keeps_origin() -> None:
    assert dlq("tidzam.audio.x.1") == "tidzam.dlq.audio.x.1"
