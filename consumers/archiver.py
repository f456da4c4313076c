"""The archiver: live audio into hour files, so that today's stream is tomorrow's archive.

``python -m consumers.archiver`` writes the sources matching ``TIDZAM_ARCHIVE_SOURCES``
(a glob, default ``*``) into ``TIDZAM_ARCHIVE_DIR/<source>/<source>-YYYY-MM-DD-HH-MM-SS.ext``:
the name is the time of the file's first sample, a new file starts at each hour and
each session. FLAC (lossless) up to 8 channels, Ogg/Opus beyond (FLAC's limit).
These are the archive folders ``source add --database`` plays from a date. A session
whose first chunk falls inside a file already in the source's folder is audio this
archive holds (the archive itself played back): it is not written again.

With ``TIDZAM_PRIVACY=mask`` and ``TIDZAM_PRIVACY_ARCHIVE`` ``masked`` (its default) or
``none``, a set also waits for the predictions of its windows: speech is written as
silence, or not at all (the file ends before the set, the next starts after it);
``raw`` archives speech as it came (``consumers.privacy``).

A set (one chunk per channel, same seq) is written once complete; the chunks of a set
still incomplete at the end of a batch are nak'd and kept in memory, so a crash never
loses them; what was already written is recorded per session and never written twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, SecretStr

from audio import archive
from audio.encode import AudioWriter
from bus.backlog import oldest_unacked_at
from bus.connect import connect, ensure_streams
from bus.process import run_process
from bus.runner import Ack, ConsumerRunner, Delivery, Nak, Outcome
from bus_schemas import AudioChunk, pcm
from bus_schemas import subjects as subj
from bus_schemas.streams import ARCHIVER
from consumers.privacy import PrivacyGate, PrivacySettings, follow_predictions

log = logging.getLogger(__name__)

SPEC = ARCHIVER
HOUR_NS = 3_600 * 1_000_000_000
STATE_KEEP_S = 48 * 3_600.0  # twice the AUDIO stream's age limit
I16 = npt.NDArray[np.int16]


@dataclass
class Session:
    source: str
    origin_ns: int
    rate: int
    channels: tuple[int, ...] = ()  # learnt from the first complete set
    sets: dict[int, dict[int, AudioChunk]] = field(default_factory=dict)
    seen_at: dict[int, float] = field(default_factory=dict)  # seq -> first chunk (monotonic)
    next_seq: int = 0
    file: AudioWriter | None = None
    file_hour: int = -1
    last_seen: float = field(default_factory=time.monotonic)
    covered_by: str | None = None  # already archived (an archive played back): skipped


class Archiver:
    def __init__(self, root: Path, pattern: str = "*", idle_s: float = 30.0,
                 gate: PrivacyGate | None = None,
                 speech: Literal["masked", "none"] = "masked") -> None:
        self.root = root
        self.gate = gate  # privacy: sets wait for their predictions, speech as ``speech``
        self.speech = speech
        self.dropped_sets = 0  # speech not archived (``none``)
        self.pattern = pattern
        self.idle_s = idle_s
        self._busy = asyncio.Lock()  # batches and idle checks take turns
        self.sessions: dict[tuple[str, int], Session] = {}
        root.mkdir(parents=True, exist_ok=True)
        self._state_path = root / ".archiver-state.json"
        # "source@origin" -> {"next": seq to write next, "channels": [...]}
        self._written: dict[str, dict[str, Any]] = self._load_state()

    def _load_state(self) -> dict[str, dict[str, Any]]:
        if self._state_path.exists():
            data: dict[str, dict[str, Any]] = json.loads(self._state_path.read_text())
            return data
        return {}

    def _save_state(self) -> None:
        """Written sessions, minus those the AUDIO stream can no longer redeliver."""
        horizon = time.time() - STATE_KEEP_S
        self._written = {k: v for k, v in self._written.items() if v["at"] >= horizon}
        tmp = self._state_path.with_suffix(".tmp")
        with open(tmp, "w") as out:
            json.dump(self._written, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self._state_path)

    async def tick(self) -> None:
        """Periodic: finish the files of sessions that went quiet."""
        async with self._busy:
            await asyncio.to_thread(self._close_idle)

    async def handle(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        async with self._busy:
            return await self._handle(deliveries)

    async def _handle(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        outcomes: list[Outcome] = [Ack()] * len(deliveries)
        held: list[tuple[int, Session, int]] = []
        for i, d in enumerate(deliveries):
            chunk = d.event
            if not isinstance(chunk, AudioChunk) or not fnmatch.fnmatch(chunk.source,
                                                                       self.pattern):
                continue
            session = self._session(chunk)
            if session.covered_by is not None:
                if chunk.final:
                    self.sessions.pop((chunk.source, chunk.origin_ns), None)
                continue
            if chunk.seq < session.next_seq:  # written before (a redelivery, a restart)
                if chunk.final and session.file is None:
                    self.sessions.pop((chunk.source, chunk.origin_ns), None)
                continue
            session.sets.setdefault(chunk.seq, {})[chunk.channel] = chunk
            session.seen_at.setdefault(chunk.seq, time.monotonic())
            session.last_seen = time.monotonic()
            held.append((i, session, chunk.seq))
        await asyncio.to_thread(self._write_ready)
        for i, session, seq in held:
            if seq >= session.next_seq:  # still incomplete: come back, nothing is lost
                outcomes[i] = Nak(delay_s=0.5)
        self._save_state()
        return outcomes

    def _session(self, chunk: AudioChunk) -> Session:
        key = (chunk.source, chunk.origin_ns)
        session = self.sessions.get(key)
        if session is None:
            session = Session(chunk.source, chunk.origin_ns, chunk.sample_rate)
            # a session first seen mid-way (retention dropped its start, the archiver was
            # enabled later) is archived from there, not waited for from seq 0
            known = self._written.get(f"{chunk.source}@{chunk.origin_ns}")
            if known is None:
                known = self._new_session(chunk)
            session.next_seq = int(known["next"])
            session.channels = tuple(known["channels"])
            session.covered_by = known.get("covered_by")
            self.sessions[key] = session
        return session

    def _new_session(self, chunk: AudioChunk) -> dict[str, Any]:
        """Record a session before any of its audio is written (so that a restart
        knows its own files from an archive played back), deciding whether it is
        audio this archive already holds: an archive of this source played back."""
        at = datetime.fromtimestamp(chunk.start_ns / 1e9, UTC)
        covering = archive.covering(self.root / chunk.source, chunk.source, at)
        record: dict[str, Any] = {"next": chunk.seq, "channels": [], "at": time.time(),
                                  "covered_by": covering.path.name if covering else None}
        if covering is not None:
            log.info("%s from %s is already archived in %s: not archived again",
                     chunk.source, at.isoformat(), covering.path.name)
        self._written[f"{chunk.source}@{chunk.origin_ns}"] = record
        self._save_state()
        return record

    def _write_ready(self) -> None:
        """Worker thread: write every complete set, in seq order, per session."""
        for key, session in list(self.sessions.items()):
            while session.next_seq in session.sets:
                chunks = session.sets[session.next_seq]
                later = any(seq > session.next_seq for seq in session.sets)
                final = any(c.final for c in chunks.values())
                if not session.channels:
                    if not (later or final):
                        break  # the first set's channels are known once the next starts
                    session.channels = tuple(sorted(chunks))
                if len(chunks) < len(session.channels):
                    break
                in_order = [chunks[ch] for ch in session.channels]
                expired = False
                if self.gate is not None:
                    waited = time.monotonic() - session.seen_at[session.next_seq]
                    expired = waited >= self.gate.wait_s
                    if not expired and not all(map(self.gate.decided, in_order)):
                        break  # its windows are not all known yet
                self._write(session, in_order, expired)
                del session.sets[session.next_seq]
                del session.seen_at[session.next_seq]
                session.next_seq += 1
                self._written.setdefault(f"{session.source}@{session.origin_ns}", {}).update(
                    next=session.next_seq, channels=list(session.channels), at=time.time())
                if final:
                    self._close(session)
                    del self.sessions[key]
                    break

    def _close_idle(self) -> None:
        """Finish the files of sessions that went quiet without a final chunk (a source
        stopped or crashed): a later chunk of theirs would open a new file."""
        now = time.monotonic()
        for key, session in list(self.sessions.items()):
            if now - session.last_seen > self.idle_s and not session.sets:
                self._close(session)
                del self.sessions[key]

    def _write(self, session: Session, chunks: list[AudioChunk], expired: bool = False) -> None:
        n = min(c.n_samples for c in chunks)
        if n == 0:
            return
        columns: list[I16] = [np.frombuffer(c.samples, dtype="<i2")[:n]
                              if c.encoding == "s16le" else pcm.to_int16(c.to_float32()[:n])
                              for c in chunks]
        if self.gate is not None:
            masked = [self.gate.mask(c, x, expired and not self.gate.decided(c))
                      for c, x in zip(chunks, columns, strict=True)]
            if self.speech == "none" and any(count for _, count in masked):
                self._close(session)  # no audio for speech: the next file starts after it
                self.dropped_sets += 1
                return
            columns = [x.astype(np.int16, copy=False) for x, _ in masked]
        block = np.stack(columns, axis=1)
        start_ns = chunks[0].start_ns
        while block.shape[0]:
            hour = start_ns // HOUR_NS
            if session.file is None or hour != session.file_hour:
                self._close(session)
                session.file = self._open(session, start_ns, len(chunks))
                session.file_hour = hour
            room = ((hour + 1) * HOUR_NS - start_ns) * session.rate // 1_000_000_000
            part, block = block[: max(1, room)], block[max(1, room):]
            session.file.write(part)
            start_ns += part.shape[0] * 1_000_000_000 // session.rate

    def _open(self, session: Session, start_ns: int, channels: int) -> AudioWriter:
        folder = self.root / session.source
        folder.mkdir(parents=True, exist_ok=True)
        ext = "flac" if channels <= 8 else "opus"
        path = folder / archive.archive_name(session.source, start_ns, ext)
        n = 1
        while path.exists():  # a restart within the same second: never overwrite
            path = folder / archive.archive_name(session.source, start_ns, ext, n)
            n += 1
        log.info("archiving %s into %s", session.source, path)
        return AudioWriter(path, channels, session.rate)

    @staticmethod
    def _close(session: Session) -> None:
        if session.file is not None:
            session.file.close()
            session.file = None

    def close(self) -> None:
        for session in self.sessions.values():
            self._close(session)
        self._save_state()


class ArchiverSettings(PrivacySettings):
    nats_url: SecretStr
    archive_dir: Path
    archive_sources: str = Field("*", min_length=1)


async def run(settings: ArchiverSettings, stop: asyncio.Event) -> None:
    settings.archive_dir.mkdir(parents=True, exist_ok=True)
    nc = await connect(settings.nats_url.get_secret_value(), "tidzam-archiver")
    await ensure_streams(nc.jetstream())
    speech = settings.privacy_archive
    gate = None
    tasks = []
    if settings.masking and speech != "raw":
        gate = PrivacyGate(settings.privacy_speech_score, 10 * settings.privacy_wait_s)
        # the predictions of the audio not yet archived: from when its oldest was stored
        since = await oldest_unacked_at(nc, SPEC.stream, SPEC.durable, subj.AUDIO_ALL)
        tasks.append(asyncio.create_task(follow_predictions(nc, gate, SPEC.durable, stop,
                                                            since)))
    archiver = Archiver(settings.archive_dir, settings.archive_sources, gate=gate,
                        speech="none" if speech == "none" else "masked")
    log.info("archiving %s into %s%s", settings.archive_sources, settings.archive_dir,
             f", speech {speech}" if gate else "")

    async def idle_checks() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), archiver.idle_s / 2)
            await archiver.tick()

    tasks.append(asyncio.create_task(idle_checks()))
    await ConsumerRunner(nc, SPEC, archiver.handle).run(stop)
    for task in tasks:
        await task
    archiver.close()
    await nc.drain()
    log.info("archiver drained: exiting")


def main() -> None:
    settings = ArchiverSettings()
    run_process(lambda stop: run(settings, stop))


if __name__ == "__main__":
    main()
