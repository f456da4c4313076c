"""Mixing augmentation for the YAMNet head: an event window over a bed, in the audio.

YAMNet is not linear, so a mixture must go through the front end as audio: each
mixture is a window of an *event* recording (birds, insects, frog, thunder,
vehicle, speech) plus a window of a *bed* recording (rain, wind, water) at a random
event-to-bed ratio, with a random overall gain that keeps it above the energy gate
and, for half of them, a low-pass at a random cut-off (band-limited microphones).
Its targets are both classes. A mixture belongs to both recordings' packages and
groups: a cross-validation fold that holds out either never trains on it, and
mixtures are never tested (``learning.training.crossval``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import scipy.signal

from audio.decode import AudioDecodeError, decode_all
from inference.hearing import QUIET_GATE_DB, WINDOW_48K, rms_db
from inference.yamnet import YamnetFrontEnd
from learning.corpus.manifest import CorpusFile
from learning.embeddings.cache import RATE, FileWindows, WindowConfig, compute

F32 = npt.NDArray[np.float32]
BEDS = ("rain", "wind", "water")


@dataclass(frozen=True)
class MixConfig:
    per_event_file: int = 3
    ratio_db: tuple[float, float] = (-6.0, 12.0)  # event level over bed level
    level_db: tuple[float, float] = (-40.0, -12.0)  # the mixture's RMS
    lowpass_hz: tuple[float, float] = (4_000.0, 16_000.0)
    seed: int = 0


@dataclass(frozen=True)
class Mixture:
    """One mixed window through the front end, with its two sources."""

    windows: FileWindows  # one row
    label: str  # "<event class>+<bed class>"
    packages: tuple[str, str]
    groups: tuple[str, str]


def _loud_window(audio: F32, rng: np.random.Generator) -> F32 | None:
    """A random window of ``audio`` within 10 dB of its loudest, or None."""
    if audio.shape[0] < WINDOW_48K:
        audio = np.pad(audio, (0, WINDOW_48K - audio.shape[0]))
    starts = np.arange(0, audio.shape[0] - WINDOW_48K + 1, WINDOW_48K // 2)
    wins = np.stack([audio[s:s + WINDOW_48K] for s in starts.tolist()])
    levels = rms_db(wins)
    ok = np.flatnonzero(levels >= max(levels.max() - 10.0, QUIET_GATE_DB + 10.0))
    return wins[int(rng.choice(ok))] if ok.size else None


def _decode(entry: CorpusFile, cache: Path) -> F32 | None:
    try:
        audio, _ = decode_all(cache / entry.local, RATE)
    except AudioDecodeError:
        return None
    mono: F32 = audio.mean(axis=0).astype(np.float32)
    return mono


def mix(event: F32, bed: F32, cfg: MixConfig, rng: np.random.Generator) -> F32:
    """``event`` over ``bed`` (two windows), at a random ratio, level and band."""
    ratio = rng.uniform(*cfg.ratio_db)
    e_db, b_db = float(rms_db(event[None])[0]), float(rms_db(bed[None])[0])
    out = event + bed * np.float32(10 ** ((e_db - ratio - b_db) / 20))
    if rng.random() < 0.5:
        sos = scipy.signal.butter(8, rng.uniform(*cfg.lowpass_hz), fs=RATE, output="sos")
        out = scipy.signal.sosfilt(sos, out).astype(np.float32)
    level = float(rms_db(out[None])[0])
    gain = 10 ** ((rng.uniform(*cfg.level_db) - level) / 20)
    mixed: F32 = np.clip(out * np.float32(gain), -1.0, 1.0).astype(np.float32)
    return mixed


def mixtures(files: Sequence[CorpusFile], cache: Path, front_end: YamnetFrontEnd,
             cfg: MixConfig | None = None, wcfg: WindowConfig | None = None
             ) -> list[Mixture]:
    """``per_event_file`` mixtures of each event file, each over a bed of another
    package (so no fold trains on a mixture of its own package's pieces alone)."""
    cfg = cfg or MixConfig()
    wcfg = wcfg or WindowConfig()
    rng = np.random.default_rng(cfg.seed)
    beds = [f for f in files if f.label in BEDS and not f.also]
    events = [f for f in files if f.label not in BEDS and f.label != "quiet" and not f.also]
    bed_audio: dict[str, F32] = {}
    out: list[Mixture] = []
    for entry in events:
        audio = _decode(entry, cache)
        if audio is None:
            continue
        others = [b for b in beds if b.package != entry.package]
        for _ in range(cfg.per_event_file):
            bed = others[int(rng.integers(len(others)))]
            if bed.sha256 not in bed_audio:
                got = _decode(bed, cache)
                bed_audio[bed.sha256] = got if got is not None else np.zeros(0, np.float32)
            ev, bw = _loud_window(audio, rng), _loud_window(bed_audio[bed.sha256], rng)
            if ev is None or bw is None:
                continue
            row = compute(mix(ev, bw, cfg, rng), front_end, wcfg)
            out.append(Mixture(row, f"{entry.label}+{bed.label}", (entry.package, bed.package),
                               (entry.group, bed.group)))
    return out
