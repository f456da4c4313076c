"""ProjectionStore against a real PostgreSQL: rows, checkpoints, exactly-once, reset."""

from __future__ import annotations

import asyncio
import math
import struct
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from bus_schemas.events import (
    AudioChunk,
    Event,
    LiveStreamClosed,
    LiveStreamOpened,
    ModelDeployed,
    Prediction,
    SampleExtracted,
    SampleLabelled,
    SourceFailed,
    SourceLoaded,
    SourceUnloaded,
)
from projections import store as store_module
from projections.queries import counts, sources
from projections.store import ApplyResult, CheckpointError, ProjectionStore, to_datetime
from tests.fixtures_pg import LABELS, health, prediction

T0 = 1_750_000_000_000_000_000  # 2025-06-15T15:06:40Z, in ns
HALF_S = 500_000_000

Pool = AsyncConnectionPool[Any]


async def fetch(pool: Pool, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(query, params)
        rows: list[tuple[Any, ...]] = await cur.fetchall()
        return rows


def windows(n: int, first_seq: int = 1, **kwargs: Any) -> list[tuple[int, Event]]:
    """``n`` consecutive windows; seq ``s`` carries window ``s - 1``, as on the bus."""
    seqs = range(first_seq, first_seq + n)
    return [(seq, prediction(T0 + (seq - 1) * HALF_S, **kwargs)) for seq in seqs]


def test_to_datetime_is_exact_to_the_microsecond() -> None:
    assert to_datetime(T0 + 999) == datetime(2025, 6, 15, 15, 6, 40, tzinfo=UTC)
    assert to_datetime(T0 + 1_234_567) == datetime(2025, 6, 15, 15, 6, 40, 1234, tzinfo=UTC)


async def test_predictions_become_detections(pg_pool: Pool) -> None:
    items: list[tuple[int, Event]] = [
        (1, prediction(T0, result=("birds",), scores=(0.9, 0.05, 0.02, 0.02, 0.01))),
        (2, prediction(T0 + HALF_S, result=("unknown",))),
        (3, prediction(T0 + 2 * HALF_S, result=("rain", "wind"),
                       scores=(0.1, 0.7, 0.6, 0.0, 0.0))),
    ]
    result = await ProjectionStore(pg_pool).apply("main", "EVENTS", items)

    assert (result.applied, result.skipped, result.checkpoint) == (3, 0, 3)
    # predictions, detections, their events (birds, rain, wind), the model's label order
    assert result.rows == 3 + 3 + 3 + 1
    rows = await fetch(pg_pool, "SELECT time, label, confidence, window_end, model_id,"
                                " model_version FROM detections ORDER BY time, label")
    assert [(r[0], r[1]) for r in rows] == [
        (to_datetime(T0), "birds"),
        (to_datetime(T0 + 2 * HALF_S), "rain"),
        (to_datetime(T0 + 2 * HALF_S), "wind"),
    ]
    assert [r[2] for r in rows] == pytest.approx([0.9, 0.7, 0.6])
    assert rows[0][3] == to_datetime(T0 + HALF_S)
    assert {(r[4], r[5]) for r in rows} == {("selector", "1")}


async def test_predictions_keep_the_full_score_vector(pg_pool: Pool) -> None:
    await ProjectionStore(pg_pool).apply("main", "EVENTS", windows(2))
    rows = await fetch(pg_pool, "SELECT scores, result FROM predictions ORDER BY time")
    assert len(rows) == 2
    assert rows[0][0] == pytest.approx([0.9, 0.05, 0.02, 0.02, 0.01])
    assert rows[0][1] == ["birds"]
    models = await fetch(pg_pool, "SELECT model_id, version, labels FROM models")
    assert models == [("selector", "1", list(LABELS))]


async def test_a_label_outside_the_vector_has_no_confidence(pg_pool: Pool) -> None:
    await ProjectionStore(pg_pool).apply("main", "EVENTS",
                                         [(1, prediction(T0, result=("birds", "owl")))])
    rows = await fetch(pg_pool, "SELECT label, confidence FROM detections ORDER BY label")
    assert rows[0][0] == "birds" and rows[0][1] == pytest.approx(0.9)
    assert rows[1] == ("owl", None)


async def test_the_same_items_again_write_nothing(pg_pool: Pool) -> None:
    store = ProjectionStore(pg_pool)
    first = await store.apply("main", "EVENTS", windows(50))
    again = await store.apply("main", "EVENTS", windows(50))

    assert first.applied == 50 and first.rows > 0
    assert (again.applied, again.skipped, again.rows, again.checkpoint) == (0, 50, 0, 50)
    assert (await fetch(pg_pool, "SELECT count(*) FROM detections"))[0][0] == 50


async def test_a_batch_straddling_the_checkpoint_applies_only_the_new(pg_pool: Pool) -> None:
    store = ProjectionStore(pg_pool)
    await store.apply("main", "EVENTS", windows(10))
    result = await store.apply("main", "EVENTS", windows(15, first_seq=6))  # seqs 6..20

    assert (result.applied, result.skipped, result.checkpoint) == (10, 5, 20)
    assert (await fetch(pg_pool, "SELECT count(*) FROM predictions"))[0][0] == 20
    assert await store.checkpoint("main", "EVENTS") == 20


async def test_a_replayed_event_under_a_new_seq_is_stored_once(pg_pool: Pool) -> None:
    store = ProjectionStore(pg_pool)
    await store.apply("main", "EVENTS", windows(5))
    republished = [(seq + 5, event) for seq, event in windows(5)]  # same windows, new seqs
    result = await store.apply("main", "EVENTS", republished)

    assert result.applied == 5 and result.rows == 0 and result.checkpoint == 10
    assert (await fetch(pg_pool, "SELECT count(*) FROM detections"))[0][0] == 5


async def test_the_checkpoint_never_goes_backwards(pg_pool: Pool) -> None:
    store = ProjectionStore(pg_pool)
    await store.apply("main", "EVENTS", windows(1, first_seq=100))
    older = await store.apply("main", "EVENTS", windows(3, first_seq=10))

    assert (older.applied, older.skipped, older.checkpoint) == (0, 3, 100)
    assert await store.checkpoint("main", "EVENTS") == 100
    async with pg_pool.connection() as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="backwards"):
            await conn.execute("UPDATE projection_checkpoints SET last_seq = 5")
    with pytest.raises(CheckpointError):
        await store.apply("main", "EVENTS", windows(1, first_seq=0))


async def test_checkpoints_are_per_projection_and_stream(pg_pool: Pool) -> None:
    store = ProjectionStore(pg_pool)
    await store.apply("main", "EVENTS", windows(3))
    await store.apply("other", "EVENTS", windows(1, first_seq=7))

    assert await store.checkpoint("main", "EVENTS") == 3
    assert await store.checkpoint("other", "EVENTS") == 7
    assert await store.checkpoint("main", "CONTROL") == 0


async def test_unprojected_events_advance_the_checkpoint(pg_pool: Pool) -> None:
    chunk = AudioChunk(source="mic", channel=0, seq=0, first_sample=0, start_ns=T0,
                       sample_rate=48_000, samples=b"\x00\x00" * 4)
    result = await ProjectionStore(pg_pool).apply("main", "EVENTS", [(1, chunk), (2, chunk)])

    assert (result.applied, result.rows, result.checkpoint) == (2, 0, 2)
    assert (await counts_of(pg_pool))["detections"] == 0


async def counts_of(pool: Pool) -> dict[str, int]:
    async with pool.connection() as conn:
        return await counts(conn)


async def test_a_failure_inside_the_transaction_leaves_nothing(
    pg_pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def crash(*args: Any) -> None:
        raise RuntimeError("power cut between the rows and the checkpoint")

    monkeypatch.setattr(store_module, "_advance", crash)
    store = ProjectionStore(pg_pool)
    with pytest.raises(RuntimeError, match="power cut"):
        await store.apply("main", "EVENTS", windows(20))

    assert await store.checkpoint("main", "EVENTS") == 0
    tallies = await counts_of(pg_pool)
    assert tallies["detections"] == tallies["predictions"] == tallies["models"] == 0
    assert tallies["detection_events"] == 0
    monkeypatch.undo()
    assert (await store.apply("main", "EVENTS", windows(20))).applied == 20  # redelivery


async def test_concurrent_writers_of_the_same_batch_write_it_once(pg_pool: Pool) -> None:
    stores = [ProjectionStore(pg_pool) for _ in range(3)]
    results = await asyncio.gather(*(s.apply("main", "EVENTS", windows(200)) for s in stores))

    assert sorted(r.applied for r in results) == [0, 0, 200]
    assert (await fetch(pg_pool, "SELECT count(*) FROM detections"))[0][0] == 200


async def test_a_new_month_gets_its_partition(pg_pool: Pool) -> None:
    january = 1_735_689_600_000_000_000  # 2025-01-01T00:00:00Z
    items = [(1, prediction(january - HALF_S)), (2, prediction(january))]
    await ProjectionStore(pg_pool).apply("main", "EVENTS", items)

    placed = await fetch(pg_pool, "SELECT tableoid::regclass::text, time FROM detections"
                                  " ORDER BY time")
    assert [p[0] for p in placed] == ["detections_202412", "detections_202501"]
    parts = await fetch(pg_pool, "SELECT tableoid::regclass::text FROM predictions")
    assert sorted(p[0] for p in parts) == ["predictions_202412", "predictions_202501"]


async def test_rows_of_a_month_in_the_default_partition_stay_there(pg_pool: Pool) -> None:
    march = datetime(2025, 3, 10, tzinfo=UTC)
    async with pg_pool.connection() as conn:  # written by hand before its partition existed
        await conn.execute(
            "INSERT INTO detections VALUES (%s, 'mic', 0, 'rain', 0.5, 'm', '1', %s)",
            (march, march))
    march_ns = int(march.timestamp()) * 1_000_000_000
    result = await ProjectionStore(pg_pool).apply("main", "EVENTS",
                                                  [(1, prediction(march_ns + HALF_S))])
    assert result.applied == 1
    placed = await fetch(pg_pool, "SELECT DISTINCT tableoid::regclass::text FROM detections")
    assert placed == [("detections_default",)]


def control(*events: Event) -> list[tuple[int, Event]]:
    return list(enumerate(events, start=1))


async def test_source_lifecycle(pg_pool: Pool) -> None:
    s = 1_000_000_000
    store = ProjectionStore(pg_pool)
    await store.apply("main", "CONTROL", control(
        SourceLoaded(source="pond", kind="url", location="http://x/pond.ogg",
                     channels=(0, 1), sample_rate=48_000, permanent=True, at_ns=T0),
        SourceFailed(source="pond", reason="connection reset", at_ns=T0 + s, attempt=1,
                     will_retry=True),
        SourceFailed(source="pond", reason="timeout", at_ns=T0 + 2 * s, attempt=2,
                     will_retry=True),
        SourceFailed(source="ghost", reason="no such file", at_ns=T0),
    ))
    async with pg_pool.connection() as conn:
        rows = {row.name: row for row in await sources(conn)}
    pond = rows["pond"]
    assert (pond.state, pond.attempts, pond.last_error) == ("failed", 2, "timeout")
    assert pond.since == to_datetime(T0 + s)  # failing since the first failure
    assert (pond.kind, pond.channels, pond.permanent) == ("url", [0, 1], True)
    assert (rows["ghost"].state, rows["ghost"].kind) == ("failed", None)

    await store.apply("main", "CONTROL", [
        (5, SourceLoaded(source="pond", kind="url", location="http://x/pond.ogg",
                         channels=(0, 1), sample_rate=48_000, at_ns=T0 + 3 * s, attempt=3)),
        (6, SourceUnloaded(source="pond", reason="user", at_ns=T0 + 4 * s)),
    ])
    async with pg_pool.connection() as conn:
        pond = {row.name: row for row in await sources(conn)}["pond"]
    assert (pond.state, pond.since, pond.attempts) == ("unloaded", to_datetime(T0 + 4 * s), 0)
    assert pond.last_error == "timeout"  # the last error stays visible


async def test_live_streams_are_sources_of_kind_live(pg_pool: Pool) -> None:
    store = ProjectionStore(pg_pool)
    await store.apply("main", "CONTROL", control(
        LiveStreamOpened(source="phone", client="sid-1", sample_rate=16_000, at_ns=T0)))
    async with pg_pool.connection() as conn:
        (row,) = await sources(conn)
    assert (row.kind, row.location, row.state, row.sample_rate) == ("live", "sid-1", "loaded",
                                                                     16_000)
    await store.apply("main", "CONTROL",
                      [(2, LiveStreamClosed(source="phone", reason="bye", at_ns=T0 + 1))])
    async with pg_pool.connection() as conn:
        (row,) = await sources(conn)
    assert row.state == "unloaded"


async def test_model_deployed_fills_in_the_model(pg_pool: Pool) -> None:
    store = ProjectionStore(pg_pool)
    await store.apply("main", "EVENTS", windows(1))  # registers the label order first
    await store.apply("main", "CONTROL", control(ModelDeployed(
        model_id="selector", model_version="1", sha256="0" * 64,
        path="/models/selector/1", labels=LABELS,
        feature_params={"sample_rate": 48_000, "n_mels": 64, "kind": "mel"}, at_ns=T0)))
    rows = await fetch(pg_pool, "SELECT labels, feature_params, path, deployed_at FROM models")
    assert rows == [(list(LABELS), {"sample_rate": 48_000, "n_mels": 64, "kind": "mel"},
                     "/models/selector/1", to_datetime(T0))]


async def test_reset_everything(pg_pool: Pool) -> None:
    store = ProjectionStore(pg_pool)
    await store.apply("main", "EVENTS", windows(10))
    await store.apply("main", "CONTROL", control(SourceFailed(source="a", reason="x", at_ns=1)))
    result = await store.reset(None)

    assert result.projections == ("main",)
    assert all(n == 0 for n in (await counts_of(pg_pool)).values())
    assert await store.checkpoint("main", "EVENTS") == 0
    assert (await store.apply("main", "EVENTS", windows(10))).rows > 0  # replays from seq 1


async def test_reset_one_projection_resets_those_sharing_its_tables(pg_pool: Pool) -> None:
    store = ProjectionStore(pg_pool)
    await store.apply("detections", "EVENTS", windows(4))
    await store.apply("control", "CONTROL", control(ModelDeployed(
        model_id="m", model_version="2", sha256="0" * 64,
        path="p", labels=("a",), feature_params={}, at_ns=1)))
    await store.apply("health", "CONTROL", control(SourceFailed(source="a", reason="x", at_ns=1)))
    result = await store.reset("detections")

    assert result.tables == ("detection_events", "detections", "models", "predictions")
    assert result.projections == ("control", "detections")  # control wrote models too
    assert await store.checkpoint("health", "CONTROL") == 1
    tallies = await counts_of(pg_pool)
    assert (tallies["detections"], tallies["models"], tallies["sources"]) == (0, 0, 1)
    assert tallies["detection_events"] == 0


# (NaN and infinities never reach the store: a Prediction holding one is refused at decode,
# tests/test_bus_schemas.py; the extremes float4 can hold still round-trip)
@pytest.mark.parametrize("scores", [
    (),
    (0.25, 3.0e38, -3.0e38, -0.5, 1e-30),
    tuple(i / 1000 for i in range(1000)),
])
async def test_score_vectors_round_trip_as_float4(pg_pool: Pool, scores: tuple[float, ...]) -> None:
    labels = tuple(f"c{i}" for i in range(len(scores)))
    event = Prediction(source="mic", channel=0, window_start_ns=T0, window_end_ns=T0 + HALF_S,
                       model_id="m", model_version="1", labels=labels, scores=scores,
                       result=("unknown",))
    await ProjectionStore(pg_pool).apply("main", "EVENTS", [(1, event)])
    (row,) = await fetch(pg_pool, "SELECT scores FROM predictions")
    as_float4 = [struct.unpack("f", struct.pack("f", s))[0] for s in scores]
    assert struct.pack(f"{len(scores)}f", *row[0]) == struct.pack(f"{len(scores)}f", *as_float4)


async def test_unordered_and_repeated_items(pg_pool: Pool) -> None:
    items = windows(6)
    shuffled = [items[3], items[0], items[5], items[0], items[1], items[4], items[2]]
    result = await ProjectionStore(pg_pool).apply("main", "EVENTS", shuffled)
    assert (result.applied, result.skipped, result.checkpoint) == (6, 1, 6)
    assert (await fetch(pg_pool, "SELECT count(*) FROM detections"))[0][0] == 6


async def test_an_empty_batch_changes_nothing(pg_pool: Pool) -> None:
    store = ProjectionStore(pg_pool)
    await store.apply("main", "EVENTS", windows(2))
    assert await store.apply("main", "EVENTS", []) == ApplyResult(0, 0, 0, 2)


async def test_channel_health_is_stored_once_and_joined_to_each_detection(pg_pool: Pool) -> None:
    """A window's level is the power mean of the seconds it overlaps; its noise floor
    likewise; a redelivered health event is stored once."""
    second = 1_000_000_000
    items: list[tuple[int, Event]] = [
        (1, health(T0, rms_dbfs=-30.0, noise_floor_dbfs=-50.0)),
        (2, health(T0 + second, rms_dbfs=-40.0, noise_floor_dbfs=-60.0, peak_dbfs=-1.0)),
        (3, health(T0 + 2 * second, rms_dbfs=-10.0, dead=True)),  # after the window
        (4, health(T0, channel=1, rms_dbfs=-80.0)),  # another channel
        (5, prediction(T0 + HALF_S, result=("birds",), length_ns=second)),  # 0.5 .. 1.5 s
        (6, prediction(T0 + 5 * second, result=("birds",))),  # no health there
        (7, health(T0, rms_dbfs=-30.0, noise_floor_dbfs=-50.0)),  # a replayed fact
    ]
    await ProjectionStore(pg_pool).apply("main", "EVENTS", items)
    stored = await fetch(pg_pool, "SELECT channel, rms_dbfs, dead FROM channel_health"
                                  " ORDER BY channel, time")
    assert stored == [(0, -30.0, False), (0, -40.0, False), (0, -10.0, True), (1, -80.0, False)]
    rows = await fetch(pg_pool, "SELECT time, level_dbfs, noise_floor_dbfs, peak_dbfs, dead"
                                " FROM detections_with_level ORDER BY time")
    assert len(rows) == 2
    level = 10 * math.log10((10 ** -3 + 10 ** -4) / 2)
    floor = 10 * math.log10((10 ** -5 + 10 ** -6) / 2)
    assert rows[0][1:] == (pytest.approx(level, abs=1e-3), pytest.approx(floor, abs=1e-3),
                           -1.0, False)
    assert rows[1][1:] == (None, None, None, None)
    quiet = await fetch(pg_pool, "SELECT count(*) FROM detections_with_level"
                                 " WHERE label = 'birds' AND noise_floor_dbfs < -50")
    assert quiet == [(1,)]


def _sample(n: int, label: str = "unknown", destination: str = "samples") -> SampleExtracted:
    start = T0 + n * 10**10
    return SampleExtracted(
        sample_id=f"mic-0-{n}", source="mic", channel=0, start_ns=start - HALF_S,
        end_ns=start + 3 * HALF_S, window_start_ns=start, window_end_ns=start + 2 * HALF_S,
        label=label, confidence=0.3, model_id="selector", model_version="1",
        labels=LABELS, scores=(0.3, 0.3, 0.2, 0.1, 0.1), reason="unknown",
        destination=destination, sample_rate=48_000, path=f"{destination}/{label}/s{n}.flac")


async def test_samples_and_their_reviews_in_any_order(pg_pool: Pool) -> None:
    """A review projected before its sample (another stream) is not lost; the latest
    review wins; samples_info counts the unchecked per class, reviewed ones under
    their new label."""
    store = ProjectionStore(pg_pool)
    await store.apply("main", "CONTROL", [
        (1, SampleLabelled(sample_id="mic-0-1", label="rain", previous_label="unknown",
                           by="ann", at_ns=T0 + 2_000)),
        (2, SampleLabelled(sample_id="mic-0-1", label="wind", previous_label="unknown",
                           by="bob", at_ns=T0 + 1_000)),  # older than ann's: loses
    ])
    await store.apply("main", "EVENTS", [(1, _sample(1)), (2, _sample(2)), (3, _sample(3)),
                                         (4, _sample(3)),  # the same sample again
                                         (5, _sample(4, "birds"))])
    rows = await fetch(pg_pool, "SELECT sample_id, label, reviewed_label, reviewed_by,"
                                " scores[1] FROM samples ORDER BY sample_id")
    assert [r[:4] for r in rows] == [("mic-0-1", "unknown", "rain", "ann"),
                                     ("mic-0-2", "unknown", None, None),
                                     ("mic-0-3", "unknown", None, None),
                                     ("mic-0-4", "birds", None, None)]
    assert rows[0][4] == pytest.approx(0.3)
    info = await fetch(pg_pool, "SELECT label, samples, unchecked, reviewed FROM samples_info"
                                " ORDER BY label")
    assert info == [("birds", 1, 1, 0), ("rain", 1, 0, 1), ("unknown", 2, 2, 0)]
    # an undo of ann's review: an empty label makes the sample unchecked again
    await store.apply("main", "CONTROL", [
        (3, SampleLabelled(sample_id="mic-0-1", label="", previous_label="rain", by="ann",
                           at_ns=T0 + 3_000))])
    assert await fetch(pg_pool, "SELECT reviewed_label, previous_label FROM samples"
                                " WHERE sample_id = 'mic-0-1'") == [(None, "rain")]
    assert await fetch(pg_pool, "SELECT label, samples, unchecked FROM samples_info"
                                " WHERE label = 'unknown'") == [("unknown", 3, 3)]
