from __future__ import annotations

import msgpack
import numpy as np
import pytest
from pydantic import ValidationError

from bus_schemas import (
    EVENT_TYPES,
    AudioChunk,
    ChannelHealth,
    DecodeError,
    ExtractionRule,
    ExtractionRulesSet,
    Prediction,
    decode,
    encode,
)
from bus_schemas.codec import HEADER_TYPE, HEADER_VERSION, MSG_ID_HEADER
from bus_schemas.subjects import dlq, subject_for
from bus_schemas.upcasters import UPCASTERS, UpcastError, upcast
from tests.golden_events import EXAMPLES, golden_path


def test_every_event_type_has_a_golden_example() -> None:
    assert {e.event_type for e in EXAMPLES} == set(EVENT_TYPES)


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.event_type)
def test_golden_body_decodes_to_the_example_and_reencodes_identically(event) -> None:  # type: ignore[no-untyped-def]
    body = golden_path(event).read_bytes()
    headers = {HEADER_TYPE: event.event_type, HEADER_VERSION: str(event.schema_version)}
    assert decode(headers, body) == event
    assert encode(event)[1] == body


OLD_GOLDEN = sorted((int(p.parent.name[1:]), p.stem) for p in golden_path(EXAMPLES[0])
                    .parent.parent.glob("v*/*.msgpack")
                    if int(p.parent.name[1:]) < EVENT_TYPES[p.stem].schema_version)


@pytest.mark.parametrize(("version", "type_name"), OLD_GOLDEN,
                         ids=[f"{t}-v{v}" for v, t in OLD_GOLDEN])
def test_every_older_golden_body_is_still_read(version: int, type_name: str) -> None:
    """Events stored by an older schema stay readable: upcast to today's model."""
    body = (golden_path(EXAMPLES[0]).parent.parent / f"v{version}" / f"{type_name}.msgpack"
            ).read_bytes()
    event = decode({HEADER_TYPE: type_name, HEADER_VERSION: str(version)}, body)
    assert type(event) is EVENT_TYPES[type_name]


def test_channel_health_v1_reads_as_v2_with_unmeasured_fields_none() -> None:
    body = (golden_path(EXAMPLES[0]).parent.parent / "v1" / "ChannelHealth.msgpack").read_bytes()
    event = decode({HEADER_TYPE: "ChannelHealth", HEADER_VERSION: "1"}, body)
    assert isinstance(event, ChannelHealth)
    assert (event.rms_dbfs, event.peak_dbfs, event.dead) == (-40.5, -3.0, False)
    assert (event.noise_floor_dbfs, event.dc_offset, event.hum_db, event.hum_hz) == (None,) * 4


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
    with pytest.raises(DecodeError, match="invalid AudioChunk v2: source"):
        decode(headers, msgpack.packb({**chunk.model_dump(), "source": "a.b"}))
    with pytest.raises(DecodeError, match="newer than this code"):
        decode({**headers, HEADER_VERSION: "3"}, body)


@pytest.mark.parametrize(("change", "why"), [
    ({"scores": (float("nan"), 0.1)}, r"scores\.0"),  # non-finite numbers
    ({"scores": (float("inf"), 0.1)}, r"scores\.0"),
    ({"window_start_ns": 5_000_000_000_000_000_000}, "window_start_ns"),  # after 2100
    ({"window_end_ns": 2**64 - 1}, "window_end_ns"),
    ({"labels": ("x" * 3008, "b")}, r"labels\.0"),  # overflows an index row
    ({"result": ("",)}, r"result\.0"),
    ({"result": ("bi\x00rds",)}, r"result\.0"),  # PostgreSQL cannot store a NUL byte
    ({"labels": ("a", "new\nline")}, r"labels\.1"),
    ({"model_version": "v" * 65}, "model_version"),
])
def test_forged_or_absurd_predictions_are_refused_at_decode(change: dict[str, object],
                                                            why: str) -> None:
    """Schema-valid in shape, absurd in value: refused when read, with the field in the
    reason (the runner dead-letters such a message at once)."""
    [prediction] = [e for e in EXAMPLES if isinstance(e, Prediction)][:1]
    headers, _ = encode(prediction)
    forged = {**prediction.model_dump(), **change}
    if "scores" not in change and "labels" in change:
        forged["scores"] = prediction.scores[:len(change["labels"])]  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match=why):
        decode(headers, msgpack.packb(forged))


def test_an_audio_chunk_time_near_two_to_the_64_is_refused_at_decode() -> None:
    chunk = EXAMPLES[0]
    headers, _ = encode(chunk)
    with pytest.raises(DecodeError, match="start_ns"):
        decode(headers, msgpack.packb({**chunk.model_dump(), "start_ns": 2**64 - 2}))


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
    del old["origin_ns"]  # and, like v1, did not name the session
    registry = {**UPCASTERS,
                ("Prediction", 0): lambda b: {**{k: v for k, v in b.items() if k != "probs"},
                                              "scores": b["probs"]}}
    headers = {HEADER_TYPE: "Prediction", HEADER_VERSION: "0"}
    assert decode(headers, msgpack.packb(old), upcasters=registry) == pred.model_copy(
        update={"origin_ns": None})


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


def test_extraction_rules_v1_read_as_v2_without_context_or_cooldown() -> None:
    body = (golden_path(EXAMPLES[0]).parent.parent / "v1" / "ExtractionRulesSet.msgpack"
            ).read_bytes()
    event = decode({HEADER_TYPE: "ExtractionRulesSet", HEADER_VERSION: "1"}, body)
    assert isinstance(event, ExtractionRulesSet)
    first, second = event.rules
    assert (first.source, first.channels, first.classes, first.rate) == (
        "herring", (1,), ("birds",), "auto")
    assert (first.length_s, first.before_s, first.after_s, first.cooldown_s) == (0.5, 0, 0, 0)
    assert second.classes == ("*",) and second.length_s == 2.0 and second.rate == 0.25


def test_the_most_specific_extraction_rule_applies() -> None:
    rules = ExtractionRulesSet(at_ns=0, rules=(
        ExtractionRule(rate=0.1),
        ExtractionRule(source="pond*", rate=0.2),
        ExtractionRule(source="pond", rate=0.3),
        ExtractionRule(source="pond", channels=(2, 3), classes=("birds-*",), rate=0.4)))
    assert [rules.rule_for(s, c).rate for s, c in  # type: ignore[union-attr]
            (("forest", 0), ("pond2", 0), ("pond", 0), ("pond", 3))] == [0.1, 0.2, 0.3, 0.4]
    chosen = rules.rule_for("pond", 2)
    assert chosen is not None and chosen.wants("birds-american_crow")
    assert not chosen.wants("birds") and not chosen.wants("rain")
    assert ExtractionRulesSet(at_ns=0, rules=()).rule_for("pond", 0) is None


@pytest.mark.parametrize("bad", [
    {"classes": ("birds[",)}, {"classes": ("a b",)}, {"classes": ()}, {"rate": 7},
    {"rate": -0.1}, {"source": "a.b"}, {"channels": (1, 1)}, {"before_s": 100},
    {"length_s": 0}, {"cooldown_s": -1}, {"destination": "../x"}, {"rate": "sometimes"}])
def test_a_bad_rule_is_refused_with_a_reason(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ExtractionRule(**bad)  # type: ignore[arg-type]


def test_two_rules_for_the_same_place_are_refused() -> None:
    with pytest.raises(ValidationError, match="same source and channels"):
        ExtractionRulesSet(at_ns=0, rules=(ExtractionRule(source="a", channels=(1, 2)),
                                           ExtractionRule(source="a", channels=(2, 1))))
