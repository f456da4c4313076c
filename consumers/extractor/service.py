"""The sample extractor: predictions in, samples (FLAC + JSON sidecar) and
``SampleExtracted`` events out, as the extraction rules say.

``python -m consumers.extractor.service`` follows the rule set in force (the last
``ExtractionRulesSet`` on CONTROL, re-read whenever a new one is published) and
reads every ``Prediction`` of the EVENTS stream (durable ``extractor``). For a
window a rule wants (``policy.choose``; never speech), it reads the window's audio
with its context back from the AUDIO stream (``bus.history.read_audio``), writes
``<samples>/<destination>/<label>/<sample_id>.flac`` and its ``.json`` sidecar
(source, channel, times, model and version, full scores, rule, reason), publishes
``SampleExtracted``, and only then acks the prediction.

Nothing is extracted twice: the sample id is fixed by the window (source, channel,
start, model), the coin by the window too (``policy.draw``), the files are written
atomically and a sidecar already there means the sample exists (a redelivery
re-publishes its event, stored once by its message id). The cooldown keeps any two
samples of a channel ``cooldown_s`` apart, whatever order windows come in, from
the samples on disk, so it survives a restart. Run one extractor per samples
folder (the cooldown and the counts are decided in one place).

It is background work (``GiveWay``): while the classifiers have a backlog of audio
(``TIDZAM_EXTRACTOR_GIVE_WAY`` chunks, 64), it fetches no prediction and leaves the
cores to detection, then catches up.

The audio comes from the AUDIO stream, which keeps 24 hours (``streams.AUDIO``): a
prediction read later than that (an extractor stopped for a day) has no audio left;
it is counted as ``expired`` and logged, never retried. A window whose context
after it is not yet in the stream is retried a few seconds later (``nak``) until
it is, or until the session ends.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from pydantic import Field, SecretStr

from audio.encode import write_flac
from bus.backlog import classifiers_waiting
from bus.connect import connect, ensure_streams
from bus.history import AudioCursor, AudioSpan, read_audio, read_rule_sets, settle_read
from bus.process import run_process
from bus.publisher import Publisher
from bus.runner import Ack, ConsumerRunner, Delivery, Outcome, TransientError
from bus_schemas import (
    ExtractionRule,
    ExtractionRulesSet,
    Prediction,
    SampleExtracted,
)
from bus_schemas import subjects as subj
from bus_schemas.errors import TidzamError
from bus_schemas.streams import EVENTS, EXTRACTOR
from consumers.extractor import policy
from consumers.privacy import PrivacySettings, is_private

log = logging.getLogger(__name__)


class ExtractorError(TidzamError, RuntimeError):
    """The extractor cannot start (its samples folder or checkpoint is unusable)."""

WAIT_TRIES = 8  # retries while a window's context after it is not stored yet; then cut
CHECKPOINT = ".extractor.json"  # in the samples folder: the last EVENTS sequence handled


@dataclass
class ExtractorStats:
    seen: int = 0
    extracted: int = 0
    again: int = 0  # a sample already on disk: its event published again
    private: int = 0  # speech: never extracted
    cooldown: int = 0
    not_centred: int = 0
    expired: int = 0  # the audio was no longer in the AUDIO stream
    reasons: Counter[str] = field(default_factory=Counter)


def sample_id(prediction: Prediction) -> str:
    """``<source>-<channel>-<UTC window start, µs>-<model>``: one window, one id."""
    start = datetime.fromtimestamp(prediction.window_start_ns // 1000 / 1e6, UTC)
    stamp = start.strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{prediction.source}-{prediction.channel}-{stamp}-{prediction.model_id}"


@dataclass
class OnDisk:
    """What the samples folder holds: counts per (destination, label) for ``auto``,
    and each channel's sample windows (sorted starts) for the cooldown."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    windows: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    @classmethod
    def scan(cls, root: Path) -> OnDisk:
        disk = cls()
        for sidecar in root.glob("*/*/*.json") if root.is_dir() else ():
            try:
                meta = json.loads(sidecar.read_text())
                disk.add(sidecar.parent.parent.name, sidecar.parent.name, meta["source"],
                         int(meta["channel"]), int(meta["window_start_ns"]))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("%s: unreadable sidecar (%s): not counted", sidecar, exc)
        return disk

    def add(self, destination: str, label: str, source: str, channel: int,
            window_start_ns: int) -> None:
        self.counts[(destination, label)] += 1
        bisect.insort(self.windows.setdefault((source, channel), []), window_start_ns)

    def nearest_gap_ns(self, source: str, channel: int, start_ns: int) -> int | None:
        """Distance to the channel's closest sample window, before or after."""
        starts = self.windows.get((source, channel))
        if not starts:
            return None
        i = bisect.bisect_left(starts, start_ns)
        return min(abs(starts[j] - start_ns) for j in (i - 1, i) if 0 <= j < len(starts))


class Extractor:
    """Predictions in stream order (an ordered runner): a channel's cooldown and the
    class counts of ``auto`` depend on which windows came first, so the same stream
    gives the same samples, whatever crash or restart happened. The position handled
    is kept beside the samples (``CHECKPOINT``), written after each batch; a crash
    before it hands the batch over again, whose samples are then found on disk."""

    def __init__(self, nc: Client, root: Path, speech_score: float = 0.5) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._pub = Publisher(self._js)
        self.root = root
        self.speech_score = speech_score
        self.rules = ExtractionRulesSet(rules=(), at_ns=0)
        self.disk = OnDisk.scan(root)
        self.stats = ExtractorStats()
        self.checkpoint = self._read_checkpoint()
        self._waits: Counter[str] = Counter()
        self.cursor = AudioCursor()  # where each channel's last read ended

    def runner(self, give_way: GiveWay | None = None) -> ConsumerRunner:
        """The ordered runner, restarted after the last sequence handled."""
        return ConsumerRunner(self._nc, EXTRACTOR, self.handle, ordered=True,
                              start_after=self.checkpoint,
                              before_fetch=give_way.wait if give_way else None)

    def _read_checkpoint(self) -> int:
        try:
            return int(json.loads((self.root / CHECKPOINT).read_text())["last_seq"])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError) as exc:
            raise ExtractorError(f"{self.root / CHECKPOINT} is unreadable ({exc}): remove "
                                 "it to read every prediction again (no sample is written "
                                 "twice)") from exc

    def _commit(self, seq: int) -> None:
        if seq <= self.checkpoint:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        part = self.root / f"{CHECKPOINT}.part"
        part.write_text(json.dumps({"stream": EVENTS.name, "last_seq": seq}))
        os.replace(part, self.root / CHECKPOINT)
        self.checkpoint = seq

    async def load_rules(self) -> bool:
        """Take the rule set in force; whether it changed."""
        history, _ = await read_rule_sets(self._js)
        if history and history[-1][1] != self.rules:
            self.rules = history[-1][1]
            log.info("extraction rules: %d rule(s), set by %s", len(self.rules.rules),
                     self.rules.by or "?")
            return True
        return False

    async def handle(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """Handle a batch in stream order, then commit the position. A window whose
        context is not stored yet stops the batch there (``TransientError``): what was
        handled is committed, the runner retries the rest."""
        done = self.checkpoint
        try:
            for delivery in sorted(deliveries, key=lambda d: d.stream_seq):
                if delivery.stream_seq > self.checkpoint:
                    await self._one(delivery)
                    done = delivery.stream_seq
        finally:
            self._commit(done)
        return [Ack() for _ in deliveries]

    async def _one(self, delivery: Delivery) -> None:
        pred = delivery.event
        if not isinstance(pred, Prediction):
            return
        self.stats.seen += 1
        rule = self.rules.rule_for(pred.source, pred.channel)
        if rule is None:
            return
        if is_private(pred, self.speech_score):
            self.stats.private += 1
            return
        counts = {label: n for (dest, label), n in self.disk.counts.items()
                  if dest == rule.destination}
        choice = policy.choose(pred, rule, counts)
        if choice is None:
            return
        sid = sample_id(pred)
        folder = self.root / rule.destination / choice.label
        sidecar = folder / f"{sid}.json"
        if sidecar.exists():  # written before a crash or a lost ack: the event again
            await self._publish(json.loads(sidecar.read_text()))
            self.stats.again += 1
            return
        if policy.draw(sid) >= choice.probability:
            return
        gap = self.disk.nearest_gap_ns(pred.source, pred.channel, pred.window_start_ns)
        if gap is not None and gap < rule.cooldown_s * 1e9:  # in any order: no two that close
            self.stats.cooldown += 1
            return
        span = await self._audio(pred, rule, delivery)
        if span is None:
            self.stats.expired += 1
            log.warning("no audio left in the AUDIO stream for %s: not extracted", sid)
            return
        if not span.complete and self._waits[sid] < WAIT_TRIES:
            self._waits[sid] += 1
            raise TransientError(f"the context after {sid} is not in the AUDIO stream yet")
        self._waits.pop(sid, None)
        if rule.centred and not policy.is_centred(_window_of(span, pred)):
            self.stats.not_centred += 1
            return
        record = self._write(pred, rule, choice, sid, span, folder)
        await self._publish(record)
        self.disk.add(rule.destination, choice.label, pred.source, pred.channel,
                      pred.window_start_ns)
        self.stats.extracted += 1
        self.stats.reasons[choice.reason] += 1
        log.info("sample %s (%s, %s)", sid, choice.label, choice.reason)

    async def _audio(self, pred: Prediction, rule: ExtractionRule,
                     delivery: Delivery) -> AudioSpan | None:
        if rule.length_s is None:
            start, end = pred.window_start_ns, pred.window_end_ns
        else:
            middle = (pred.window_start_ns + pred.window_end_ns) // 2
            half = int(rule.length_s * 5e8)
            start, end = middle - half, middle + half
        stored = delivery.msg.metadata.timestamp
        return await read_audio(self._nc, pred.source, pred.channel,
                                start - int(rule.before_s * 1e9),
                                end + int(rule.after_s * 1e9), stored,
                                origin_ns=pred.origin_ns, anchor_ns=pred.window_start_ns,
                                cursor=self.cursor)

    def _write(self, pred: Prediction, rule: ExtractionRule, choice: policy.Choice, sid: str,
               span: AudioSpan, folder: Path) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        flac = folder / f"{sid}.flac"
        write_flac(flac, span.samples, span.sample_rate)
        record: dict[str, Any] = {
            "sample_id": sid, "source": pred.source, "channel": pred.channel,
            "start": _iso(span.start_ns), "start_ns": span.start_ns, "end_ns": span.end_ns,
            "window_start_ns": pred.window_start_ns, "window_end_ns": pred.window_end_ns,
            "sample_rate": span.sample_rate, "model_id": pred.model_id,
            "model_version": pred.model_version, "labels": list(pred.labels),
            "scores": list(pred.scores), "result": list(pred.result), "label": choice.label,
            "confidence": choice.confidence, "reason": choice.reason,
            "probability": choice.probability, "rule": rule.model_dump(mode="json"),
            "destination": rule.destination,
            "path": str(flac.relative_to(self.root)),
            "sha256": hashlib.sha256(flac.read_bytes()).hexdigest(),
        }
        part = folder / f".{sid}.json.part"
        part.write_text(json.dumps(record, indent=1))
        os.replace(part, folder / f"{sid}.json")  # the sidecar last: its presence = done
        return record

    async def _publish(self, record: dict[str, Any]) -> None:
        await self._pub.publish_now(SampleExtracted(
            sample_id=record["sample_id"], source=record["source"], channel=record["channel"],
            start_ns=record["start_ns"], end_ns=record["end_ns"],
            window_start_ns=record["window_start_ns"], window_end_ns=record["window_end_ns"],
            label=record["label"], confidence=record["confidence"],
            model_id=record["model_id"], model_version=record["model_version"],
            labels=tuple(record["labels"]), scores=tuple(record["scores"]),
            reason=record["reason"], destination=record["destination"],
            sample_rate=record["sample_rate"], path=record["path"]))


class GiveWay:
    """The extractor is background work: while the classifiers have a backlog (more than
    ``pending`` audio chunks not yet handed to them: a restart, a replay at full speed),
    it fetches no prediction, so that every core goes to detection; it catches up
    once the classifiers have (the audio stays in the AUDIO stream for a day). It
    waits at most ``max_s`` at a stretch, then handles one batch: a pipeline that
    never catches up still gets its samples. ``pending`` 0: never waits."""

    def __init__(self, nc: Client, pending: int, stop: asyncio.Event, max_s: float = 60.0,
                 poll_s: float = 1.0) -> None:
        self._nc = nc
        self.pending = pending
        self._stop = stop
        self.max_s = max_s
        self.poll_s = poll_s
        self.waited_s = 0.0
        self._checked = -poll_s  # monotonic time of the last check that found no backlog

    async def wait(self) -> None:
        if self.pending <= 0 or time.monotonic() - self._checked < self.poll_s:
            return
        started = time.monotonic()
        announced = False
        while not self._stop.is_set() and time.monotonic() - started < self.max_s:
            waiting = await classifiers_waiting(self._nc)
            if waiting <= self.pending:
                self._checked = time.monotonic()
                break
            if not announced:
                log.info("the classifiers have %d chunks waiting: extraction waits", waiting)
                announced = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.poll_s)
        if announced:
            self.waited_s += time.monotonic() - started
            log.info("extraction resumes after %.0f s", time.monotonic() - started)


def _window_of(span: AudioSpan, pred: Prediction) -> Any:
    lo = max(0, (pred.window_start_ns - span.start_ns) * span.sample_rate // 1_000_000_000)
    hi = max(lo, (pred.window_end_ns - span.start_ns) * span.sample_rate // 1_000_000_000)
    return span.samples[lo:hi]


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat()


class ExtractorSettings(PrivacySettings):
    nats_url: SecretStr
    home: Path = Path(".")
    samples_dir: Path | None = None  # default: <home>/samples
    # wait while the classifiers have more audio chunks than this waiting (0: never)
    extractor_give_way: int = Field(64, ge=0)

    @property
    def samples_root(self) -> Path:
        return self.samples_dir or self.home / "samples"


async def run(settings: ExtractorSettings, stop: asyncio.Event) -> None:
    root = settings.samples_root
    root.mkdir(parents=True, exist_ok=True)
    nc = await connect(settings.nats_url.get_secret_value(), "tidzam-extractor")
    await ensure_streams(nc.jetstream())
    extractor = Extractor(nc, root, settings.privacy_speech_score)
    changed = asyncio.Event()

    async def on_rules(_msg: Any) -> None:
        changed.set()

    sub = await nc.subscribe(subj.RULES, cb=on_rules)  # before reading: no set missed
    await extractor.load_rules()

    async def follow_rules() -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(changed.wait(), 30.0)
            except TimeoutError:
                await extractor.load_rules()  # now and then, whatever was heard
                continue
            changed.clear()
            if not stop.is_set():
                await settle_read(extractor.load_rules)  # heard before it is stored

    follower = asyncio.create_task(follow_rules())
    log.info("extracting samples into %s", root)
    started = time.monotonic()
    give_way = GiveWay(nc, settings.extractor_give_way, stop)
    stats = await extractor.runner(give_way).run(stop)
    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follower
    await sub.unsubscribe()
    await nc.drain()
    log.info("extractor drained after %.0f s (%.0f s of it giving way to the classifiers): "
             "%s; %d acked; audio found from the cursor %d time(s), its guess wrong %d "
             "time(s)", time.monotonic() - started, give_way.waited_s, extractor.stats,
             stats.acked, extractor.cursor.hits, extractor.cursor.misses)


def main() -> None:
    settings = ExtractorSettings()
    run_process(lambda stop: run(settings, stop))


if __name__ == "__main__":
    main()
