"""Deploys and rollbacks at work: running classifiers that follow deploys and switch
models live (each window scored once, by one version), the ``model`` CLI, and a
whole stack switched by deploys and rollbacks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from nats.aio.client import Client

from audio.decode import decode_all
from bus.publisher import Publisher, PublishError
from bus.runner import Ack, ConsumerRunner, Delivery, Outcome
from bus_schemas import AudioChunk
from bus_schemas.streams import ConsumerSpec, classifier_consumer
from consumers.classifier.classifier import Classifier, ModelRefused
from consumers.classifier.deploys import ModelFollower
from inference.modelfolder import ModelFolder
from inference.placeholder import LoudnessScorer
from inference.registry import Deployment, ModelRegistry
from inference.scoring import TfliteModel
from producers.replay import Replayer, plan
from tests.audio_files import default_grid, expected_windows, write_pcm, write_wav
from tests.bus_reading import count_predictions, read_predictions
from tests.real_audio import DAY, MEGAGLEST, real_file
from tests.stack_helpers import ctl, running_stack, wait_for
from tests.test_model_registry import (
    BUILTIN,
    DEFAULT,
    SELECTOR,
    SHIPPED,
    SHIPPED_META,
    default_variant,
    deploy_of,
    later,
    variant,
)
from tests.waiting import wait_until
from tidzam_ctl.stack.stack import Stack


async def test_a_running_classifier_follows_deploys_and_refuses_bad_ones(
        nc: Client, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    versions = tmp_path / "models" / "selector"  # what `model add` makes
    clf = Classifier(nc, TfliteModel(SELECTOR), Publisher(nc.jetstream()))
    follower = ModelFollower(clf, registry)
    await follower.start(nc.jetstream())
    pub = Publisher(nc.jetstream())
    try:
        broken = variant(versions / later(3), later(3))
        (broken / "model.tflite").write_bytes(b"not a flatbuffer")
        await pub.publish_now(deploy_of(broken))
        await wait_until(lambda: len(follower.refusals) == 1, 20, "the broken deploy")
        assert "cannot be loaded" in follower.refusals[0] and clf.scorer.version == SHIPPED
        wide = variant(versions / later(5), later(5), window_s=1.0)
        await pub.publish_now(deploy_of(wide))
        await wait_until(lambda: len(follower.refusals) == 2, 20, "the other window")
        assert "refused: window of 48000 samples" in follower.refusals[1]
        assert clf.scorer.version == SHIPPED
        good = deploy_of(variant(versions / later(1), later(1)))
        await pub.publish_now(good)
        await wait_until(lambda: clf.scorer.version == later(1), 20, "the switch")
        await pub.publish_now(good.model_copy(update={"at_ns": time.time_ns()}))
        await pub.publish_now(deploy_of(SELECTOR))  # back, after the repeat was skipped
        await wait_until(lambda: clf.scorer.version == SHIPPED, 20, "the switch back")
        assert follower.switches == 2 and len(follower.refusals) == 2
    finally:
        await follower.stop()


async def test_a_forged_deploy_never_loads_a_folder_outside_the_registry(
        nc: Client, tmp_path: Path) -> None:
    """Anyone able to publish on the bus could name any folder: the classifier loads
    only the id@version of its own registry, and only if its files have the digest
    the deploy carries."""
    registry = ModelRegistry(tmp_path / "models")
    kept = variant(tmp_path / "models" / "selector" / later(1), later(1))
    clf = Classifier(nc, TfliteModel(SELECTOR), Publisher(nc.jetstream()))
    follower = ModelFollower(clf, registry)
    evil = variant(tmp_path / "evil", later(7))
    assert not await follower.apply(deploy_of(evil))  # a version the registry lacks
    assert "is not in this classifier's registry" in follower.refusals[-1]
    other = variant(tmp_path / "other", later(1))  # the registry's id@version, other files
    (other / "model.json").write_text((other / "model.json").read_text() + " ")
    assert not await follower.apply(deploy_of(other))
    assert "its files are not the ones deployed" in follower.refusals[-1]
    assert not await follower.apply(deploy_of(kept).model_copy(update={"sha256": ""}))
    assert "carries no sha256" in follower.refusals[-1]
    assert clf.scorer.version == SHIPPED and follower.switches == 0
    # the registry's version with its digest, whatever path the event names
    assert await follower.apply(deploy_of(kept).model_copy(update={"path": str(evil)}))
    selector = follower.selector
    assert isinstance(selector, TfliteModel) and selector.folder.path == kept
    assert clf.scorer.version == later(1)


class _Louder(LoudnessScorer):
    version = "0.0.2"


async def test_a_switch_between_batches_scores_every_window_once(nc: Client,
                                                                 tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "three.wav", seconds=6.0, channels=2)
    await Replayer(Publisher(nc.jetstream()), chunk_s=1.0).replay(plan([wav], source="sw"))
    clf = Classifier(nc, LoudnessScorer(), Publisher(nc.jetstream()), overlap=0.25)
    with pytest.raises(ModelRefused, match="window"):
        clf.swap(_wide_scorer())
    batches = 0

    async def handle_then_switch(deliveries: Sequence[Delivery]) -> Sequence[Outcome]:
        nonlocal batches
        outcomes = await clf.handle(deliveries)
        batches += 1
        if batches == 1:
            clf.swap(_Louder())
        return outcomes

    spec = _spec(batch=3)
    per_channel = expected_windows(6 * 48_000, 24_000, 18_000)
    await _run_until(nc, lambda stop: clf.consume(ConsumerRunner(nc, spec, handle_then_switch),
                                                  stop),
                     lambda n: n >= 2 * per_channel)
    preds = await read_predictions(nc)
    keys = [(p.channel, p.window_start_ns) for p in preds]
    assert len(keys) == len(set(keys)) == 2 * per_channel  # none lost, none twice
    assert {p.model_version for p in preds} == {"0.0.1", "0.0.2"} and batches > 1
    origin = min(p.window_start_ns for p in preds)
    by_chunk: dict[tuple[int, int], set[str]] = {}
    for p in preds:  # a window belongs to the chunk it starts in: 1 s chunks
        chunk = (p.window_start_ns - origin) // 1_000_000_000
        by_chunk.setdefault((p.channel, chunk), set()).add(p.model_version)
    assert all(len(v) == 1 for v in by_chunk.values())


async def test_a_deploy_landing_during_a_batch_takes_effect_at_the_next(nc: Client) -> None:
    """A chunk is scored once the next one arrives (its last windows run into it): the
    arrival of chunk 1 scores chunk 0, the arrival of the final chunk 2 scores 1 and 2."""
    chunks = [AudioChunk(source="mid", channel=0, seq=k, first_sample=k * 48_000,
                         start_ns=10**18 + k * 10**9, sample_rate=48_000,
                         samples=b"\x10\x00" * 48_000, final=k == 2) for k in range(3)]
    await Publisher(nc.jetstream()).publish_all(chunks)
    clf = Classifier(nc, LoudnessScorer(), Publisher(nc.jetstream()), overlap=0.25)

    class SwitchingMidway(LoudnessScorer):
        def predict(self, features: Any) -> Any:
            clf.swap(_Louder())  # as if the follower swapped while this batch was scored
            return super().predict(features)

    clf.scorer = SwitchingMidway()
    per_chunk = 3  # window starts 0, 0.375, 0.75 s of the first 1 s chunk
    total = expected_windows(3 * 48_000, 24_000, 18_000)
    await _run_until(nc, lambda stop: clf.consume(ConsumerRunner(nc, _spec(batch=1),
                                                                 clf.handle), stop),
                     lambda n: n >= total)
    preds = sorted(await read_predictions(nc), key=lambda p: p.window_start_ns)
    assert [p.model_version for p in preds] == ["0.0.1"] * per_chunk + ["0.0.2"] * (
        total - per_chunk)


def _spec(batch: int) -> ConsumerSpec:
    return dataclasses.replace(classifier_consumer("placeholder"), batch=batch)


def _wide_scorer() -> LoudnessScorer:
    from inference.features import FeatureParams

    wide = LoudnessScorer()
    wide.features = FeatureParams(window_s=1.0)
    return wide


class _Msg:
    """What the classifier reads of a delivered message, and the acks it sends."""

    def __init__(self) -> None:
        self.metadata = SimpleNamespace(timestamp=datetime.now(UTC), num_pending=0)
        self.acks = 0

    async def ack(self) -> None:
        self.acks += 1


class _FailingOnce(Publisher):
    failed = False

    async def publish_all(self, events: Any) -> None:
        if not self.failed:
            self.failed = True
            raise PublishError("the bus went away")
        await super().publish_all(events)


async def test_a_chunk_is_scored_by_one_version_whatever_happens_to_its_acks(
        nc: Client) -> None:
    """A publish that fails keeps the chunk held and the scorer it had: after a switch
    it is scored again by that same version (same message ids, stored once). A chunk
    acked before and delivered again (a lost ack) is acked, not scored again."""
    def chunk(source: str) -> AudioChunk:
        return AudioChunk(source=source, channel=0, seq=0, first_sample=0, start_ns=10**18,
                          sample_rate=48_000, samples=b"\x10\x00" * 48_000, final=True)

    clf = Classifier(nc, LoudnessScorer(), _FailingOnce(nc.jetstream()), overlap=0.25)

    def delivery(event: AudioChunk, seq: int, msg: _Msg) -> Delivery:
        return Delivery(msg=msg, event=event, stream_seq=seq,  # type: ignore[arg-type]
                        num_delivered=1, subject=f"tidzam.audio.{event.source}.0")

    first = _Msg()
    await clf.handle([delivery(chunk("re"), 7, first)])  # scored, the publish fails
    await clf.settle()
    assert first.acks == 0 and not await read_predictions(nc) and clf.stats.held == 1
    clf.swap(_Louder())
    async with clf._lock:
        await clf.tick()  # scored again: by the version it had
    await clf.settle()
    preds = await read_predictions(nc)
    assert len(preds) == expected_windows(48_000, 24_000, 18_000) and first.acks == 1
    assert {p.model_version for p in preds} == {"0.0.1"}
    outcomes = await clf.handle([delivery(chunk("re"), 7, _Msg())])  # lost ack: redelivered
    assert outcomes == [Ack()] and len(await read_predictions(nc)) == len(preds)
    await clf.handle([delivery(chunk("other"), 8, _Msg())])  # another chunk: the new version
    await clf.settle()
    assert {p.model_version for p in await read_predictions(nc)} == {"0.0.1", "0.0.2"}


async def _run_until(nc: Client, run: Callable[[asyncio.Event], Coroutine[Any, Any, Any]],
                     done: Callable[[int], bool]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(run(stop))
    try:
        async with asyncio.timeout(60):
            while not done(await count_predictions(nc.jetstream())):
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task


# ------------------------------------------------------------- the CLI


def test_the_cli_refuses_a_broken_folder_before_touching_the_bus(tmp_path: Path) -> None:
    home = tmp_path / "home"
    newest = later(2)
    added = ctl(home, "model", "add", str(variant(tmp_path / "v12", newest)))
    assert added.returncode == 0 and f"added selector@{newest}" in added.stderr
    (home / "models" / "selector" / newest / "model.tflite").write_bytes(b"garbage")
    done = ctl(home, "model", "deploy", "selector")  # the newest, now broken
    assert done.returncode == 1, done.stderr
    assert f"cannot deploy selector@{newest}" in done.stderr and "does not run" in done.stderr
    assert "NATS" not in done.stderr  # refused by validation: the bus was never asked
    broken = variant(tmp_path / "v13", later(3))
    (broken / "model.json").write_text("{}")
    refused = ctl(home, "model", "add", str(broken))
    assert refused.returncode == 2 and "not added" in refused.stderr
    listing = json.loads(ctl(home, "model", "ls", "--json").stdout)
    assert [(r["version"], r["deployed"]) for r in listing] == [
        *((v, None) for v in BUILTIN), (newest, None)]
    shown = ctl(home, "model", "show", f"selector@{SHIPPED}")
    assert shown.returncode == 0 and "speech" in shown.stdout
    # the speech row of the metrics table: precision, recall, F1 as `model show` formats them
    [row] = [line for line in shown.stdout.splitlines()
             if re.search(r"\bspeech\b.*\d\.\d{3}", line)]
    speech_f1 = SHIPPED_META["metrics"]["held_out"]["per_class"]["speech"]["f1"]
    assert re.findall(r"\d\.\d{3}", row)[2] == f"{speech_f1:.3f}", row


def test_a_deploy_will_not_change_the_window_grid_unasked(tmp_path: Path) -> None:
    from inference.deploying import DeployRefused, plan_deploy
    from inference.registry import DeployHistory

    history = DeployHistory([], [Deployment("selector", SHIPPED, str(SELECTOR), 0, 0)])
    wide = ModelFolder.load(variant(tmp_path / "wide", later(5), window_s=1.0))
    with pytest.raises(DeployRefused, match="--new-windowing") as refused:
        plan_deploy(wide, history, new_windowing=False)
    assert refused.value.exit_code == 2
    assert plan_deploy(wide, history, new_windowing=True).event.model_version == later(5)
    same = plan_deploy(ModelFolder.load(variant(tmp_path / "same", later(1))), history)
    assert same.previous is not None and same.previous.version == SHIPPED


# ------------------------------------------------------ a whole stack


def _replay(stack: Stack, clip: Path, source: str) -> None:
    done = ctl(stack.home, "replay", str(clip), "--source", source, "--wait", "--timeout", "120")
    assert done.returncode == 0, done.stderr


def _classifier_log(stack: Stack) -> str:
    return (stack.log_dir / "classifier-0.log").read_text(errors="replace")


def _windows(stack: Stack, source: str) -> list[tuple[int, int, str]]:
    """(channel, window start in ns, model version) of every prediction of a source."""
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT channel, (extract(epoch FROM time) * 1e9)::bigint, model_version"
            " FROM predictions WHERE source = %s", (source,)).fetchall()
    return [(int(c), int(t), str(v)) for c, t, v in rows]


def _stored_on_the_bus(stack: Stack, source: str) -> int:
    from bus.connect import connect

    async def count() -> int:
        nc = await connect(stack.nats_url, "pytest-count")
        try:
            info = await nc.jetstream().stream_info("EVENTS",
                                                    subjects_filter=f"tidzam.pred.{source}.*")
            return sum((info.state.subjects or {}).values())
        finally:
            await nc.drain()

    return asyncio.run(count())


def test_deploys_and_rollbacks_switch_a_running_stack(tmp_path: Path) -> None:
    day, _ = decode_all(real_file(MEGAGLEST, DAY), 48_000)
    clip = write_pcm(tmp_path / "day.wav", day[:, 20 * 48_000:28 * 48_000])  # 8 s, stereo
    window, hop = default_grid()
    per_channel = expected_windows(8 * 48_000, window, hop)
    with running_stack(tmp_path / "home") as stack:  # the default selector, DEFAULT
        home = stack.home
        nothing = ctl(home, "model", "rollback", "selector")
        assert nothing.returncode == 2 and "nothing to roll back to" in nothing.stderr
        _replay(stack, clip, "before")
        new = later(1)
        added = ctl(home, "model", "add", str(default_variant(tmp_path / "v11", new)))
        assert added.returncode == 0
        deployed = ctl(home, "model", "deploy", "selector")
        assert deployed.returncode == 0 and f"deployed selector@{new} (was {DEFAULT})" in \
            deployed.stderr.replace("\n", " ")
        wait_for(lambda: f"→ selector@{new}" in _classifier_log(stack), 60, "the switch")
        _replay(stack, clip, "after")

        stack.stop_process("classifier-0")  # a classifier started after the deploy
        assert "classifier-0" in stack.check()
        wait_for(lambda: f"classifier selector@{new} running" in _classifier_log(stack), 60,
                 "the restarted classifier")
        _replay(stack, clip, "restarted")

        back = ctl(home, "model", "rollback", "selector")
        assert back.returncode == 0 and f"rolled back to selector@{DEFAULT}" in back.stderr
        wait_for(lambda: f"→ selector@{DEFAULT}" in _classifier_log(stack), 60, "the rollback")
        _replay(stack, clip, "rolledback")

        bad = later(2)
        broken = default_variant(tmp_path / "v12", bad)
        assert ctl(home, "model", "add", str(broken)).returncode == 0
        (home / "models" / "selector" / bad / "head.npz").write_bytes(b"garbage")
        refused = ctl(home, "model", "deploy", f"selector@{bad}")
        assert refused.returncode == 1 and "does not run" in refused.stderr
        listing = json.loads(ctl(home, "model", "ls", "--json").stdout)
        assert {r["version"]: r["deployed"] for r in listing} == {
            **{v: False for v in BUILTIN}, DEFAULT: True, new: False, bad: False}

        for source, version in (("before", DEFAULT), ("after", new),
                                ("restarted", new), ("rolledback", DEFAULT)):
            rows = _windows(stack, source)
            assert {v for _, _, v in rows} == {version}, source
            keys = [(c, t) for c, t, _ in rows]
            assert len(keys) == len(set(keys)) == 2 * per_channel, source  # each window once
            for ch in (0, 1):
                starts = sorted(t for c, t in keys if c == ch)
                steps = {b - a for a, b in itertools.pairwise(starts)}
                assert steps == {hop * 10**9 // 48_000}, source
            assert _stored_on_the_bus(stack, source) == 2 * per_channel, source
