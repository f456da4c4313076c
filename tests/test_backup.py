"""``tidzam_ctl backup`` / ``restore``: a stack's database, configuration history,
models and samples, restored into a fresh home, answer the same queries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.real_audio import MEGAGLEST, RAIN, real_file
from tests.stack_helpers import ctl, running_stack, wait_for
from tests.test_model_registry import default_variant, later


def _json(home: Path, *args: str) -> Any:
    done = ctl(home, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def _state(home: Path) -> dict[str, Any]:
    """What a user sees of a stack: detections, events, rules, sources, models."""
    models = [(m["model_id"], m["version"], m["deployed"], m["builtin"])
              for m in _json(home, "model", "ls")]
    sources = [(s["name"], s["wanted"]) for s in _json(home, "source", "ls")]
    return {"detections": _json(home, "query", "detections", "--source", "pond"),
            "events": _json(home, "query", "events", "--source", "pond"),
            "rules": _json(home, "rules", "get"), "models": models, "sources": sources}


def test_a_backup_restored_into_a_fresh_home_answers_the_same(tmp_path: Path) -> None:
    rain = real_file(MEGAGLEST, RAIN)
    a, b, saved = tmp_path / "a", tmp_path / "b", tmp_path / "saved"
    with running_stack(a):
        assert ctl(a, "rules", "set", "pond*", "--classes", "*", "--rate", "1",
                   "--cooldown", "2").returncode == 0
        added = ctl(a, "model", "add", str(default_variant(tmp_path / "v", later(2))))
        assert added.returncode == 0, added.stderr
        deployed = ctl(a, "model", "deploy", f"selector@{later(2)}")
        assert deployed.returncode == 0, deployed.stderr
        done = ctl(a, "replay", str(rain), "--source", "pond", "--start",
                   "2025-06-01T00:00:00Z", "--wait")
        assert done.returncode == 0, done.stderr
        wait_for(lambda: len(_files(a / "samples")) >= 4, 60, "extracted samples")
        before = _state(a)
        assert before["detections"] and before["events"] and before["rules"]
        assert all(d["model_version"] == later(2) for d in before["detections"])
        samples = _files(a / "samples")
        made = ctl(a, "backup", str(saved))
        assert made.returncode == 0, made.stderr
        refused = ctl(a, "restore", str(saved))  # not a fresh home: nothing touched
        assert refused.returncode == 2 and "restore into a fresh home" in refused.stderr

    damaged = tmp_path / "damaged"
    shutil.copytree(saved, damaged)
    dump = damaged / "postgres.dump"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    with running_stack(b):
        bad = ctl(b, "restore", str(damaged))
        assert bad.returncode == 2 and "damaged: postgres.dump" in bad.stderr
        done = ctl(b, "restore", str(saved))
        assert done.returncode == 0, done.stderr
        assert _state(b) == before
        assert _files(b / "samples") == samples
        assert _files(b / "models") == _files(a / "models")
        # the restored home goes on: the deployed model classifies new audio, which
        # is projected (the checkpoints point into the new streams)
        again = ctl(b, "replay", str(rain), "--source", "pond2", "--start",
                    "2025-06-02T00:00:00Z", "--wait")
        assert again.returncode == 0, again.stderr
        rows = _json(b, "query", "detections", "--source", "pond2")
        assert len(rows) == len(before["detections"])
        assert {r["model_version"] for r in rows} == {later(2)}
