"""consumers.classifier.lookup on a real nats-server: a scan that finds the chunk it
looks for leaves nothing to resume from, so a later scan for the same chunk finds it
again (a borrowed chunk pruned, then wanted again by a redelivered predecessor: one
kill -9 test lost a window this way)."""

from __future__ import annotations

import numpy as np
from nats.aio.client import Client

from bus.publisher import Publisher
from bus_schemas import AudioChunk
from consumers.classifier.lanes import Geometry, Lane, Piece, session_key
from consumers.classifier.lookup import StreamLookup

RATE = 48_000
T0 = 1_750_000_000 * 10**9


def _chunk(seq: int) -> AudioChunk:
    return AudioChunk(source="s", channel=0, seq=seq, first_sample=seq * RATE,
                      start_ns=T0 + seq * 10**9, sample_rate=RATE,
                      samples=np.full(RATE, seq, "<i2").tobytes())


async def test_a_found_chunk_is_found_again_after_a_prune(nc: Client) -> None:
    await Publisher(nc.jetstream()).publish_all([_chunk(k) for k in range(4)])
    lookup = StreamLookup(nc)
    lane = Lane(session_key(_chunk(0)), Geometry(24_000, 18_000), 10 * 10**9)
    first = await lookup.next_on_subject(0, "tidzam.audio.s.0")
    assert first is not None and first.seq
    held = Piece(_chunk(0), _chunk(0).pcm_samples(), 0, first.seq,
                 delivery=object())  # type: ignore[arg-type]
    assert lane.add(held) is None
    found, _, _ = await lookup.scan(lane, first.seq, 1, budget=8)
    assert found and 1 in lane.pieces
    del lane.pieces[1]  # borrowed, then pruned
    # what the classifier resumes from, for the same wanted chunk
    resume = lane.scan_for == 1 and lane.scan_cursor > held.stream_seq
    start = lane.scan_cursor if resume else held.stream_seq
    found, _, _ = await lookup.scan(lane, start, 1, budget=8)
    assert found and 1 in lane.pieces
