"""consumers.classifier.lanes: what a lane says about readiness, without a bus."""

from __future__ import annotations

import numpy as np

from bus_schemas import AudioChunk
from consumers.classifier.lanes import Geometry, Lane, Piece, session_key

RATE = 48_000
CHUNK = 48_000
STALL_NS = 10 * 10**9


def _piece(seq: int, stored_s: float, owned: bool) -> Piece:
    chunk = AudioChunk(source="s", channel=0, seq=seq, first_sample=seq * CHUNK,
                       start_ns=10**18 + seq * 10**9, sample_rate=RATE,
                       samples=np.zeros(CHUNK, "<i2").tobytes())
    return Piece(chunk, chunk.pcm_samples(), int(10**18 + stored_s * 1e9), seq + 1,
                 delivery=object() if owned else None)  # type: ignore[arg-type]


def test_a_prune_that_removes_the_proof_of_an_unbroken_boundary_asks_for_a_look_up() -> None:
    """Chunk 115 is ours and waits for 116; 112 (borrowed, stored just before) proves
    the boundary before 115 unbroken. A prune drops 112: the lane must say it changed,
    so the classifier asks again and looks 114 up, instead of holding 115 for ever
    (two classifiers at full speed hung on this)."""
    lane = Lane(session_key(_piece(0, 0, False).chunk), Geometry(24_000, 18_000), STALL_NS)
    for seq, owned in ((112, False), (115, True), (119, False)):
        assert lane.add(_piece(seq, seq * 0.01, owned)) is None
    assert lane.missing_before(lane.pieces[115]) is None  # 112 proves it
    assert lane.ready() == [] and not lane.changed  # 115 waits for 116
    lane.prune()
    assert 112 not in lane.pieces
    assert lane.changed, "the prune changed what 115 needs: the lane must be looked at again"
    assert lane.missing_before(lane.pieces[115]) == 114


def test_the_stream_gap_is_read_from_the_two_newest_chunks() -> None:
    lane = Lane(session_key(_piece(0, 0, False).chunk), Geometry(24_000, 18_000), STALL_NS)
    assert lane.stream_gap() == 1  # nothing known: read back one message at a time
    for seq, stream_seq in ((1, 3), (3, 40), (5, 104)):
        piece = _piece(seq, seq * 0.01, False)
        piece.stream_seq = stream_seq
        assert lane.add(piece) is None
    assert lane.stream_gap() == 32  # 31 messages of other subjects between two chunks


def _windows_of(lane: Lane, pieces: list[Piece]) -> list[int]:
    """Add ``pieces`` one by one (as deliveries come), scoring whatever is ready: the
    window starts scored, in order."""
    scored: list[int] = []
    for piece in pieces:
        assert lane.add(piece) is None
        for ready in lane.ready():
            scored += [int(s) for s in ready.starts]
            lane.done(ready.piece)
            lane.prune()
    return scored


def test_a_window_longer_than_a_chunk_across_a_broken_boundary_is_scored_once() -> None:
    """The default selector's 1.95-s windows (hop 1.4625 s) over 1-s chunks: the window
    at 5.85 s starts in chunk 5 and ends in chunk 7. With the boundary before chunk 6
    broken (stored 11 s late: a NATS leader re-elected), it is chunk 6's, and chunk 6
    must wait for chunk 7's audio to score it. It was dropped: one window per channel
    lost (tests/test_cluster.py, tests/test_faults.py)."""
    window, hop = 93_600, 70_200
    stored = [k * 0.1 + (11.0 if k >= 6 else 0.0) for k in range(12)]
    pieces = [_piece(k, stored[k], True) for k in range(12)]
    pieces[-1].chunk = pieces[-1].chunk.model_copy(update={"final": True})
    lane = Lane(session_key(pieces[0].chunk), Geometry(window, hop), STALL_NS)
    scored = _windows_of(lane, pieces)
    every = list(range(0, 12 * CHUNK - window + 1, hop))
    assert sorted(scored) == every and 280_800 in scored
    assert len(scored) == len(set(scored))
    # and with the next boundary broken too, the window is chunk 7's (the last broken
    # boundary it crosses), still once
    stored = [k * 0.1 + (11.0 if k >= 6 else 0.0) + (11.0 if k >= 7 else 0.0)
              for k in range(12)]
    pieces = [_piece(k, stored[k], True) for k in range(12)]
    pieces[-1].chunk = pieces[-1].chunk.model_copy(update={"final": True})
    lane = Lane(session_key(pieces[0].chunk), Geometry(window, hop), STALL_NS)
    scored = _windows_of(lane, pieces)
    assert sorted(scored) == every and len(scored) == len(set(scored))
