"""Augmentation of training windows, and balanced epochs (numpy only, no TensorFlow).

Augmentation, in the log-mel power domain (numpy, per epoch):
- gain ±12 dB, clamped so a loud window stays above the energy gate and a quiet
  window stays below it (quiet is a level, it must stay distinguishable);
- mixing with a background window (rain, wind, water, insects) 9–24 dB under
  the foreground, label unchanged;
- band limitation (a low-pass at a random mel band with the noise floor
  above it), since part of the corpus is 8–22 kHz audio;
- one time and one frequency mask (SpecAugment).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from inference.features import F32, FeatureParams, window_features
from learning.datasets.format import QUIET, TRAIN, CompiledDataset

I64 = npt.NDArray[np.int64]
BACKGROUND_CLASSES = ("rain", "wind", "water", "insects")


class Augmenter:
    """Label-preserving changes to log-mel windows, in the power domain.

    ``features`` are float32 (N, frames, mels) log-mel values (``log(power +
    floor)``); ``levels`` their RMS levels in dBFS; ``labels`` class indices.
    """

    def __init__(self, params: FeatureParams, names: Sequence[str], gate_db: float,
                 background: F32, background_db: F32, rng: np.random.Generator) -> None:
        self.floor = np.float32(params.log_floor)
        self.quiet = names.index(QUIET) if QUIET in names else -1
        self.gate_db = gate_db
        self.background = self.power(background)  # (B, frames, mels) real ambient windows
        self.background_db = background_db  # (B,) their RMS levels, dBFS
        self.rng = rng
        noise = rng.standard_normal((8, params.window_samples)).astype(np.float32)
        self.white = np.exp(window_features(noise, params)).mean(axis=(0, 1))  # 0 dBFS, (mels,)

    def power(self, features: F32) -> F32:
        return np.maximum(np.exp(features) - self.floor, 0.0).astype(np.float32)

    def log(self, power: F32) -> F32:
        out: F32 = np.log(power + self.floor).astype(np.float32)
        return out

    def gains_db(self, levels: F32, labels: npt.NDArray[np.integer[Any]]) -> F32:
        """Random ±12 dB gains that keep loud windows above the gate (+3 dB) and
        quiet ones below it (−2 dB)."""
        is_quiet = labels == self.quiet
        lo = np.where(is_quiet, -12.0, np.maximum(-12.0, self.gate_db + 3.0 - levels))
        hi = np.where(is_quiet, np.minimum(12.0, self.gate_db - 2.0 - levels),
                      np.minimum(12.0, -6.0 - levels))
        hi = np.maximum(hi, lo)
        return self.rng.uniform(lo, hi).astype(np.float32)

    def __call__(self, features: F32, levels: F32, labels: npt.NDArray[np.integer[Any]],
                 p_mix: float = 0.3, p_band: float = 0.2, p_mask: float = 0.3) -> F32:
        n = features.shape[0]
        gains = self.gains_db(levels, labels)
        power = self.power(features) * (10.0 ** (gains / 10.0))[:, None, None]
        draws = self.rng.random((3, n))
        mix = np.flatnonzero((labels != self.quiet) & (draws[0] < p_mix))
        if mix.size and self.background.shape[0]:
            power[mix] += self._backgrounds(mix.size, levels[mix] + gains[mix])
        band = np.flatnonzero(draws[1] < p_band)
        if band.size:
            power[band] = self._band_limit(power[band])
        mask = np.flatnonzero(draws[2] < p_mask)
        if mask.size:
            power[mask] = self._masks(power[mask])
        return self.log(power)

    def _backgrounds(self, n: int, fg_levels: F32) -> F32:
        """``n`` background windows scaled 9–24 dB under the given foreground levels."""
        pick = self.rng.integers(0, self.background.shape[0], n)
        bg = self.background[pick]
        rel = self.rng.uniform(-24.0, -9.0, n)
        scale = 10.0 ** ((fg_levels + rel - self.background_db[pick]) / 10.0)
        return (bg * scale[:, None, None]).astype(np.float32)

    def _band_limit(self, power: F32) -> F32:
        """Low-pass at a random mel band (40 dB down) over a −90..−70 dBFS noise floor."""
        n, _, mels = power.shape
        cut = self.rng.integers(mels * 3 // 8, mels - 4, n)
        floor_db = self.rng.uniform(-90.0, -70.0, n)
        above = np.arange(mels)[None, :] >= cut[:, None]  # (n, mels)
        noise = self.white[None, :] * (10.0 ** (floor_db / 10.0))[:, None]
        limited = power * 1e-4 + noise[:, None, :]
        return np.where(above[:, None, :], limited, power).astype(np.float32)

    def _masks(self, power: F32) -> F32:
        """One time mask (≤ 6 frames) and one frequency mask (≤ 6 bands), filled with
        each band's quietest value in the window."""
        out = power.copy()
        n, frames, mels = power.shape
        fill = power.min(axis=1)  # (n, mels)
        for i in range(n):
            t0, tw = self.rng.integers(0, frames), self.rng.integers(1, 7)
            f0, fw = self.rng.integers(0, mels), self.rng.integers(1, 7)
            out[i, t0:t0 + tw, :] = fill[i]
            out[i, :, f0:f0 + fw] = fill[i, f0:f0 + fw]
        return out


def balanced_epoch(labels: npt.NDArray[np.integer[Any]], per_class: int,
                   rng: np.random.Generator) -> I64:
    """Indices of one epoch: ``per_class`` windows of every class present (drawn
    with replacement only where a class has fewer), shuffled."""
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picks.append(rng.choice(idx, size=per_class, replace=idx.size < per_class))
    order: I64 = rng.permutation(np.concatenate(picks)).astype(np.int64)
    return order


def augmenter_for(ds: CompiledDataset, gate_db: float, rng: np.random.Generator) -> Augmenter:
    """The augmentation of ``ds``'s train side, its backgrounds drawn from the train
    windows of the background classes (never attenuated quiet copies)."""
    names = ds.label_names
    bg_ids = [names.index(c) for c in BACKGROUND_CLASSES if c in names]
    pool = (ds.split == TRAIN) & np.isin(ds.windows.labels, bg_ids) & (ds.windows.gain_db == 0)
    return Augmenter(ds.params, names, gate_db, ds.windows.features[pool],
                     ds.windows.level_db[pool], rng)
