"""Hierarchical experts from real model folders: built and pruned by the service,
chosen from deploys or else the registry, followed by a running classifier, and a
real TFLite expert in a running stack, switched by a deploy.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from nats.aio.client import Client

from audio.decode import decode_all
from bus.publisher import Publisher
from bus_schemas import ModelDeployed
from consumers.classifier.classifier import Classifier
from consumers.classifier.deploys import ModelFollower, build_cascade, expert_folders
from inference.cascade import DEFAULT_GATE, SCORE_EPS, Cascade, decide_hierarchical
from inference.features import window_features
from inference.modelfolder import ModelFolder
from inference.registry import ModelRegistry
from inference.scoring import TfliteModel
from inference.semver import semver_key
from tests.audio_files import write_pcm
from tests.real_audio import DAY, MEGAGLEST, RAIN, real_file
from tests.stack_helpers import ctl, running_stack, wait_for
from tests.test_cascade import F32, SELECTOR
from tests.test_model_registry import deploy_of
from tests.waiting import wait_until

SHIPPED = ModelFolder.load(SELECTOR).meta.version  # the shipped selector's version
NEW_SELECTOR = f"{semver_key(SHIPPED)[0] + 1}.1.0"  # a test-made selector, never the shipped


# ------------------------------------------------- model folders, the service


def expert_folder(dest: Path, model_id: str, version: str, **features: Any) -> Path:
    """A copy of the built-in selector's TFLite as the expert ``model_id``: its ten
    labels become that class's children (a real model, the selector's features)."""
    shutil.copytree(SELECTOR, dest)
    meta = json.loads((dest / "model.json").read_text())
    meta.update(model_id=model_id, version=version, metrics=None)
    if features:
        meta["features"].update(features)
    (dest / "model.json").write_text(json.dumps(meta))
    return dest


async def test_expert_folders_are_built_real_and_pruned(tmp_path: Path) -> None:
    selector = TfliteModel(SELECTOR)
    birds = ModelFolder.load(expert_folder(tmp_path / "birds", "birds", "1.0.0"))
    nested = ModelFolder.load(expert_folder(tmp_path / "bb", "birds-rain", "1.0.0"))
    cascade, problems = await build_cascade(selector, {"birds": birds, "birds-rain": nested},
                                            DEFAULT_GATE, 1, {})
    assert problems == [] and list(cascade.experts) == ["birds", "birds-rain"]
    assert len(cascade.labels) == 30 and \
        cascade.version == f"{SHIPPED}+birds.1.0.0+birds-rain.1.0.0"
    feats = window_features(real_windows(), selector.features)
    s = cascade.predict(feats)
    kids = slice(10, 20)  # birds-birds … birds-quiet
    ran = s[:, 0] >= DEFAULT_GATE - SCORE_EPS
    assert ran.any() and not ran.all()
    np.testing.assert_allclose(s[ran, kids].sum(axis=1), s[ran, 0], rtol=1e-5)
    assert np.all(s[~ran, 10:] == 0.0)
    # a broken TFLite file leaves its expert out, and the experts under it with it
    (tmp_path / "birds" / "model.tflite").write_bytes(b"garbage")
    broken = ModelFolder.load(tmp_path / "birds")
    cascade, problems = await build_cascade(selector, {"birds": broken, "birds-rain": nested},
                                            DEFAULT_GATE, 1, {})
    assert not cascade.experts and cascade.version == SHIPPED
    assert len(problems) == 1 and "expert birds@1.0.0" in problems[0] and \
        "cannot be loaded" in problems[0]
    wide = ModelFolder.load(expert_folder(tmp_path / "w", "rain", "1.0.0", fmax=8000.0))
    cascade, problems = await build_cascade(selector, {"rain": wide}, DEFAULT_GATE, 1, {})
    assert not cascade.experts and "fmax 8000.0 (selector 12000.0)" in problems[0]


def real_windows() -> F32:
    """16 windows of birds (megaglest day) then 16 of rain, float32 (32, 24000) at 48 kHz."""
    day, _ = decode_all(real_file(MEGAGLEST, DAY), 48_000)
    rain, _ = decode_all(real_file(MEGAGLEST, RAIN), 48_000)
    cut = [x[0, i * 24_000:(i + 1) * 24_000] for x in (day, rain) for i in range(16)]
    return np.stack(cut).astype(np.float32)


def _deployed(path: Path, seq: int = 1) -> tuple[int, ModelDeployed]:
    return seq, deploy_of(path)


def test_experts_come_from_deploys_else_the_newest_registry_version(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    for version in ("1.0.0", "1.2.0", "1.10.0"):
        registry.add(expert_folder(tmp_path / f"rain{version}", "rain", version))
    registry.add(expert_folder(tmp_path / "birds", "birds", "1.0.0"))
    assert {k: f.meta.version for k, f in expert_folders([], registry, "selector").items()} \
        == {"birds": "1.0.0", "rain": "1.10.0"}
    gone = ModelDeployed(model_id="rain", model_version="2.0.0", sha256="0" * 64,
                         path=str(tmp_path / "gone"), labels=("a",), feature_params={}, at_ns=1)
    history = [_deployed(registry.resolve("rain@1.2.0").path, 3), (5, gone)]  # 2.0.0: gone
    chosen = expert_folders(history, registry, "selector")
    assert chosen["rain"].meta.version == "1.2.0"
    assert set(expert_folders([], ModelRegistry(None, None), "selector")) == set()


async def test_a_running_classifier_follows_expert_deploys(nc: Client, tmp_path: Path) -> None:
    registry, added = ModelRegistry(tmp_path / "models"), tmp_path / "models"
    clf = Classifier(nc, Cascade.single(TfliteModel(SELECTOR)), Publisher(nc.jetstream()))
    follower = ModelFollower(clf, registry, gate=0.3)
    await follower.start(nc.jetstream())
    pub = Publisher(nc.jetstream())
    try:
        rain = expert_folder(added / "rain" / "1.0.0", "rain", "1.0.0")
        await pub.publish_now(_deployed(rain)[1])
        await wait_until(lambda: clf.scorer.version == f"{SHIPPED}+rain.1.0.0", 20,
                         "the rain expert")
        assert "rain-birds" in clf.scorer.labels and len(clf.scorer.labels) == 20
        other = expert_folder(added / "rain" / "1.1.0", "rain", "1.1.0", fmax=8000.0)
        await pub.publish_now(_deployed(other)[1])
        await wait_until(lambda: len(follower.refusals) == 1, 20, "the refusal")
        assert "refused: expert rain@1.1.0 computes its features with fmax 8000.0" in \
            follower.refusals[0]
        gone = ModelDeployed(model_id="rain", model_version="2.0.0", sha256="0" * 64,
                             path=str(tmp_path / "gone"), labels=("a",), feature_params={},
                             at_ns=time.time_ns())
        await pub.publish_now(gone)
        await wait_until(lambda: len(follower.refusals) == 2, 20, "the missing version")
        assert "rain@2.0.0 from" in follower.refusals[1] and \
            "is not in this classifier's registry" in follower.refusals[1]
        assert clf.scorer.version == f"{SHIPPED}+rain.1.0.0"
        owls = expert_folder(added / "owls" / "1.0.0", "owls", "1.0.0")  # no class: kept aside
        await pub.publish_now(_deployed(owls)[1])
        new = expert_folder(added / "selector" / NEW_SELECTOR, "selector", NEW_SELECTOR)
        await pub.publish_now(_deployed(new)[1])
        await wait_until(lambda: clf.scorer.version == f"{NEW_SELECTOR}+rain.1.0.0", 20,
                     "the new selector")
        assert follower.switches == 2 and len(follower.refusals) == 2
        assert set(follower.candidates) == {"rain", "owls"}
    finally:
        await follower.stop()


async def test_a_selector_switch_keeps_the_running_experts(nc: Client, tmp_path: Path) -> None:
    registry, added = ModelRegistry(tmp_path / "models"), tmp_path / "models"
    rain = expert_folder(added / "rain" / "1.0.0", "rain", "1.0.0")
    cascade = Cascade(TfliteModel(SELECTOR), {"rain": TfliteModel(rain)})
    clf = Classifier(nc, cascade, Publisher(nc.jetstream()))
    follower = ModelFollower(clf, registry)  # no candidates given: the running experts are
    assert not await follower.apply(_deployed(rain)[1])  # already the one running
    new = expert_folder(added / "selector" / NEW_SELECTOR, "selector", NEW_SELECTOR)
    assert await follower.apply(_deployed(new)[1])
    assert clf.scorer.version == f"{NEW_SELECTOR}+rain.1.0.0" and follower.switches == 1
    assert isinstance(clf.scorer, Cascade) and clf.scorer.gate == DEFAULT_GATE
    assert clf.scorer.experts["rain"] is cascade.experts["rain"]  # not loaded again


# ------------------------------------------------------------ a whole stack


def build_expert(dest: Path, version: str, labels: Sequence[str]) -> Path:
    """A real expert for the class ``rain``: the selector architecture with random
    weights (seeded), leaning to its first label, exported to TFLite."""
    import keras

    from inference.modelfolder import Decision, InputSpec, ModelMeta, write_model_folder
    from learning.training.architectures import build_selector
    from learning.training.export import export_tflite

    params = TfliteModel(SELECTOR).features
    keras.utils.set_random_seed(len(labels))
    model = build_selector(len(labels), params, mean=-8.0, std=3.0, width=8)
    dense = model.get_layer("scores")
    kernel, _ = dense.get_weights()
    dense.set_weights([kernel * 0.1, np.array([2.0] + [0.0] * (len(labels) - 1))])
    meta = ModelMeta(model_id="rain", version=version, labels=list(labels),
                     features=params.to_dict(), decision=Decision(threshold=0.5, margin=0.1),
                     input=InputSpec(shape=[None, *params.shape], dtype="float32"),
                     created=datetime.now(UTC))
    write_model_folder(dest, meta, export_tflite(model, params), None)
    return dest


def _rows(stack: Any, source: str) -> list[tuple[str, tuple[str, ...], list[float], list[str],
                                                 dict[str, float]]]:
    """(version, labels, scores, result, {detected label: confidence}) per window."""
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT p.model_version, m.labels, p.scores, p.result,"
            " coalesce((SELECT json_object_agg(d.label, d.confidence) FROM detections d"
            "  WHERE (d.model_id, d.model_version, d.source, d.channel, d.time)"
            "      = (p.model_id, p.model_version, p.source, p.channel, p.time)), '{}')"
            " FROM predictions p JOIN models m"
            "   ON (m.model_id, m.version) = (p.model_id, p.model_version)"
            " WHERE p.source = %s ORDER BY p.channel, p.time", (source,)).fetchall()
    return [(str(v), tuple(lab), list(s), list(r), dict(d)) for v, lab, s, r, d in rows]


def _check_cascade_rows(rows: list[Any], version: str, experts: Sequence[str]) -> None:
    selector = TfliteModel(SELECTOR)
    kids = [f"rain-{x}" for x in experts]
    gated = passed = refined = 0
    for got_version, labels, scores, result, detected in rows:
        assert got_version == version and labels == (*selector.labels, *kids)
        s = dict(zip(labels, scores, strict=True))
        if s["rain"] >= DEFAULT_GATE - SCORE_EPS:
            passed += 1
            assert sum(s[k] for k in kids) == pytest.approx(s["rain"], rel=1e-5)
            assert all(s[k] > 0 for k in kids)
        else:
            gated += 1
            assert all(s[k] == 0.0 for k in kids)
        expected = decide_hierarchical(labels, scores, 0.5, 0.1)
        assert tuple(result) == expected
        wanted = {x: pytest.approx(s[x], rel=1e-6) for x in expected if x != "unknown"}
        assert detected == wanted
        refined += expected[0] in kids
    assert gated and passed and refined, (gated, passed, refined)  # every case was seen


@pytest.mark.train
def test_a_stack_runs_a_real_expert_and_switches_it(tmp_path: Path) -> None:
    rain, _ = decode_all(real_file(MEGAGLEST, RAIN), 48_000)
    day, _ = decode_all(real_file(MEGAGLEST, DAY), 48_000)
    clip = write_pcm(tmp_path / "rain-then-day.wav",
                     np.concatenate([rain[:, :5 * 48_000], day[:, 20 * 48_000:22 * 48_000]],
                                    axis=1))
    home = tmp_path / "home"
    v1 = build_expert(tmp_path / "rain-1.0.0", "1.0.0", ["alpha", "beta"])
    v2 = build_expert(tmp_path / "rain-1.1.0", "1.1.0", ["alpha", "beta", "gamma"])
    assert ctl(home, "model", "add", str(v1)).returncode == 0  # registry only: no deploy

    def replay(source: str) -> None:
        done = ctl(home, "replay", str(clip), "--source", source, "--wait", "--timeout", "120")
        assert done.returncode == 0, done.stderr

    with running_stack(home, model_dir=SELECTOR) as stack:  # the first, log-mel selector
        log = stack.log_dir / "classifier-0.log"
        wait_for(lambda: f"version {SHIPPED}+rain.1.0.0" in log.read_text(errors="replace"),
                 60,
                 "the classifier with its expert")
        replay("first")
        _check_cascade_rows(_rows(stack, "first"), f"{SHIPPED}+rain.1.0.0", ["alpha", "beta"])

        assert ctl(home, "model", "add", str(v2)).returncode == 0
        deployed = ctl(home, "model", "deploy", "rain@1.1.0")
        assert deployed.returncode == 0, deployed.stderr
        wait_for(lambda: "→ rain@1.1.0" in log.read_text(errors="replace"), 60, "the switch")
        replay("second")
        _check_cascade_rows(_rows(stack, "second"), f"{SHIPPED}+rain.1.1.0",
                            ["alpha", "beta", "gamma"])
