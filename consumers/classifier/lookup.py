"""Reading the AUDIO stream around a session: what the deliveries did not bring.

Direct reads by subject (``get_msg(next=True)``, served by the stream's leader,
so a read after a write sees it): the chunks after a held one (``scan``), the
chunks before one whose predecessor this instance never saw (``fetch_before``),
and the stream's clock (``stream_last_ns``). Messages of other sessions on the
same subject are skipped and counted; they never end a session.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from nats.aio.client import Client
from nats.js.api import ConsumerInfo, RawStreamMsg
from nats.js.errors import NotFoundError

from bus_schemas import AudioChunk, DecodeError, decode
from bus_schemas.streams import AUDIO
from bus_schemas.subjects import audio as audio_subject
from consumers.classifier.lanes import Lane, Piece, session_key

log = logging.getLogger(__name__)

MAX_FOREIGN = 256  # messages of other sessions skipped looking back for one chunk


def stored_ns(when: datetime | None) -> int:
    """A stored time in ns at microsecond precision, however it reached us (the
    delivery's metadata and a direct read round differently below that)."""
    if when is None:
        return 0
    return int(when.timestamp() * 1_000_000) * 1000


class StreamLookup:
    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._js = nc.jetstream()

    async def next_on_subject(self, after_seq: int, subject: str) -> RawStreamMsg | None:
        try:
            raw: RawStreamMsg = await self._js.get_msg(AUDIO.name, seq=after_seq + 1,
                                                       subject=subject, next=True)
        except NotFoundError:
            return None
        return raw

    async def consumer_info(self, stream: str, durable: str) -> ConsumerInfo:
        info: ConsumerInfo = await self._js.consumer_info(stream, durable)
        return info

    async def stream_last_ns(self) -> int:
        """When the stream stored its newest message (0: empty or unknown)."""
        reply = await self._nc.request(f"$JS.API.STREAM.INFO.{AUDIO.name}", b"", timeout=5)
        text = json.loads(reply.data).get("state", {}).get("last_ts", "")
        if not text or text.startswith("0001-"):
            return 0
        date, _, rest = text.replace("Z", "").partition(".")
        parsed = datetime.fromisoformat(f"{date}.{rest[:6].ljust(6, '0')}").replace(tzinfo=UTC)
        return stored_ns(parsed)

    async def scan(self, lane: Lane, after_seq: int, wanted: int, budget: int
                   ) -> tuple[bool, bool, int]:
        """Read ``lane``'s subject after AUDIO sequence ``after_seq`` until chunk
        ``wanted`` of its session turns up (added, borrowed), the stream ends, or
        ``budget`` reads are spent. Returns (found, reached the end, foreign
        messages skipped); the lane's scan cursor moves on."""
        source, channel, _ = lane.key
        subject = audio_subject(source, channel)
        cursor, foreign = after_seq, 0
        lane.scan_for = wanted
        for _ in range(budget):
            raw = await self.next_on_subject(cursor, subject)
            if raw is None:
                lane.scan_cursor = cursor
                return False, True, foreign
            cursor = raw.seq or cursor + 1
            piece = _piece(raw)
            if piece is None or session_key(piece.chunk) != lane.key:
                foreign += 1
                continue
            if lane.add(piece) is not None:
                foreign += 1  # a chunk claiming this session's seq with other samples
                continue
            if piece.seq == wanted:
                # nothing to resume: a later scan for the same chunk (it was borrowed,
                # then pruned, and a redelivery waits on it again) starts before it
                lane.scan_for, lane.scan_cursor = -1, cursor
                return True, False, foreign
        lane.scan_cursor = cursor
        return False, False, foreign

    async def fetch_before(self, lane: Lane, piece: Piece, missing: int) -> int:
        """Find chunk ``missing`` of ``lane``'s session, stored before ``piece``'s
        successor in the lane, and add it (borrowed); if the stream no longer holds
        it, mark it unavailable. Returns the foreign messages skipped."""
        source, channel, _ = lane.key
        subject = audio_subject(source, channel)
        later = min((p.stream_seq for p in lane.pieces.values() if p.seq > missing),
                    default=piece.stream_seq)
        cursor, back, foreign = later, lane.stream_gap(), 0
        while foreign <= MAX_FOREIGN:
            raw = await self._previous_on_subject(cursor, subject, back)
            if raw is None or not raw.seq:
                break
            back, cursor = max(1, cursor - raw.seq), raw.seq
            found = _piece(raw)
            if found is None or session_key(found.chunk) != lane.key:
                foreign += 1
                continue
            if found.seq > missing:
                lane.add(found)
                continue
            if found.seq == missing and lane.add(found) is None:
                return foreign
            break  # the session's chunk before it is not in the stream
        log.info("%s: seq %d of the session is no longer in the stream (%d foreign "
                 "messages skipped)", subject, missing, foreign)
        lane.mark_unavailable(missing)
        return foreign

    async def _previous_on_subject(self, before_seq: int, subject: str,
                                   back: int) -> RawStreamMsg | None:
        """The last message on ``subject`` stored before stream sequence ``before_seq``
        (None: none). JetStream only reads forward by subject, so look ``back``
        sequences back, doubling until one turns up, then step forward to the last."""
        while True:
            low = max(1, before_seq - back)
            raw = await self.next_on_subject(low - 1, subject)
            if raw is not None and raw.seq and raw.seq < before_seq:
                while True:
                    nxt = await self.next_on_subject(raw.seq, subject)
                    if nxt is None or not nxt.seq or nxt.seq >= before_seq:
                        return raw
                    raw = nxt
            if low == 1:
                return None
            back *= 2


def _piece(raw: RawStreamMsg) -> Piece | None:
    """A borrowed chunk from a direct read (None: not an AudioChunk of ours)."""
    try:
        event = decode(raw.headers, raw.data or b"")
    except DecodeError:
        return None
    if not isinstance(event, AudioChunk):
        return None
    return Piece(event, event.heard_samples(), stored_ns(raw.time), raw.seq or 0)
