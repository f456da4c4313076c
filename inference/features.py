"""Log-mel spectrograms of fixed-length windows: the one feature extractor.

Training and the live classifier both call ``window_features``; a model folder
records the ``FeatureParams`` it was trained with, and the classifier refuses a
model whose parameters it cannot honour (``FeatureParams.check_compatible``).

A model that makes its own features from the waveform (the YAMNet-based selector)
asks for the kind ``wave-v1``: its "features" are the window's samples, float32 in
[-1, 1], shape (window_samples,); the FFT and mel fields are then unused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.fft

from bus_schemas.errors import TidzamError
from bus_schemas.pcm import PCM16_SCALE, Samples

F32 = npt.NDArray[np.float32]

FEATURE_KIND = "logmel-v1"
WAVE_KIND = "wave-v1"
KINDS = (FEATURE_KIND, WAVE_KIND)


class IncompatibleFeatures(TidzamError, ValueError):
    """A model asks for feature parameters this code cannot produce."""


@dataclass(frozen=True)
class FeatureParams:
    """How a window of audio becomes a (frames, mels) matrix."""

    kind: str = FEATURE_KIND
    sample_rate: int = 48_000
    window_s: float = 0.5
    n_fft: int = 1024
    hop: int = 512
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 12_000.0
    log_floor: float = 1e-6

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sample_rate)

    @property
    def n_frames(self) -> int:
        return 1 + (self.window_samples - self.n_fft) // self.hop

    @property
    def shape(self) -> tuple[int, ...]:
        """One window's features: (frames, mels), or (samples,) for ``wave-v1``."""
        if self.kind == WAVE_KIND:
            return (self.window_samples,)
        return (self.n_frames, self.n_mels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureParams:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise IncompatibleFeatures(
                f"feature parameters {sorted(unknown)} are unknown to this Tidzam; "
                "upgrade it or retrain the model"
            )
        params = cls(**data)
        params.check_compatible()
        return params

    def check_compatible(self) -> None:
        if self.kind not in KINDS:
            raise IncompatibleFeatures(
                f"feature kind {self.kind!r} is not supported (this code makes "
                f"{' or '.join(map(repr, KINDS))})"
            )
        if self.sample_rate <= 0 or self.window_samples <= 0:
            raise IncompatibleFeatures("the sample rate and the window must be positive")
        if self.kind == WAVE_KIND:
            return
        if self.n_fft > self.window_samples:
            raise IncompatibleFeatures(
                f"n_fft {self.n_fft} is longer than the window ({self.window_samples} samples)"
            )
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise IncompatibleFeatures(
                f"mel band {self.fmin}-{self.fmax} Hz does not fit a {self.sample_rate} Hz rate"
            )
        if self.hop <= 0 or self.n_mels <= 0:
            raise IncompatibleFeatures("hop and n_mels must be positive")


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(params: FeatureParams) -> F32:
    """Triangular filters, shape (n_fft // 2 + 1, n_mels), area-normalised."""
    n_bins = params.n_fft // 2 + 1
    freqs = np.linspace(0.0, params.sample_rate / 2, n_bins)
    mels = np.linspace(
        _hz_to_mel(np.array(params.fmin)), _hz_to_mel(np.array(params.fmax)), params.n_mels + 2
    )
    edges = _mel_to_hz(mels)
    bank = np.zeros((n_bins, params.n_mels), dtype=np.float64)
    for m in range(params.n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / (mid - lo)
        down = (hi - freqs) / (hi - mid)
        bank[:, m] = np.maximum(0.0, np.minimum(up, down)) * (2.0 / (hi - lo))
    return bank.astype(np.float32)


@lru_cache(maxsize=8)
def _band(params: FeatureParams) -> tuple[int, int, F32]:
    """(first, end) FFT bins some mel filter uses, and the filterbank's rows for
    them: the bins outside the band are never computed into power or summed."""
    bank = mel_filterbank(params)
    used = np.flatnonzero(bank.any(axis=1))
    first, end = int(used[0]), int(used[-1]) + 1
    return first, end, np.ascontiguousarray(bank[first:end])


# Windows per FFT pass in ``span_features``. One window is 45 frames of 1024
# float32 (180 KB) and twice that as a spectrum: 8 windows keep both within a
# few MB of cache, where 90 at once cost twice the CPU per window (0.39 against
# 0.18 ms on this 2-core machine).
FEATURE_BLOCK = 8


@lru_cache(maxsize=8)
def _hann(n: int, pcm16: bool = False) -> F32:
    """The periodic Hann window; for int16 PCM, times its scale to float."""
    hann = np.hanning(n + 1)[:-1]
    return (hann / PCM16_SCALE if pcm16 else hann).astype(np.float32)


def window_features(windows: F32, params: FeatureParams) -> F32:
    """Log-mel features of a batch of windows.

    windows: float32, shape (N, params.window_samples), mono, in [-1, 1], at
    ``params.sample_rate``. Returns float32, shape (N, n_frames, n_mels).
    """
    if windows.ndim != 2 or windows.shape[1] != params.window_samples:
        raise ValueError(
            f"expected windows of shape (N, {params.window_samples}), got {windows.shape}"
        )
    # the rows end to end as one signal: evenly spaced windows, one strided pass
    flat = np.ascontiguousarray(windows, dtype=np.float32).reshape(-1)
    starts = np.arange(windows.shape[0], dtype=np.int64) * params.window_samples
    return span_features([(flat, starts)], params)


def span_features(spans: Sequence[tuple[Samples, npt.NDArray[np.int64]]],
                  params: FeatureParams) -> F32:
    """Log-mel features of the windows at ``starts`` (sample indices) of mono
    signals, in order: float32, shape (sum of len(starts), n_frames, n_mels).

    A signal is float32 in [-1, 1] or int16 PCM (``bus_schemas.pcm``'s scale is
    folded into the FFT window): no window is copied out of its signal first.
    Windows go through the FFT ``FEATURE_BLOCK`` at a time, so that the frames and
    their spectra stay in the CPU's cache (``FEATURE_BLOCK``'s comment).
    """
    if params.kind == WAVE_KIND:
        return _waves(spans, params.window_samples)
    n = sum(int(starts.shape[0]) for _, starts in spans)
    out = np.empty((n, *params.shape), dtype=np.float32)
    frames = np.empty((min(n, FEATURE_BLOCK), params.n_frames, params.n_fft), dtype=np.float32)
    row = done = 0
    for signal, starts in spans:
        hann = _hann(params.n_fft, signal.dtype == np.int16)
        if not starts.shape[0]:
            continue
        bad = (starts < 0) | (starts + params.window_samples > signal.shape[0])
        if bad.any():
            raise ValueError(f"a window at sample {int(starts[bad][0])} does not fit a "
                             f"signal of {signal.shape[0]} samples")
        buffer = np.ascontiguousarray(signal)  # a view of a buffer needs one
        step = buffer.itemsize
        listed = starts.tolist()
        i = 0
        while i < len(listed):
            # the next windows that fit the block and lie on one grid (evenly spaced,
            # as a chunk's are): one strided view of them all, one multiply
            k = min(len(listed) - i, frames.shape[0] - row)
            gap = listed[i + 1] - listed[i] if k > 1 else 0
            j = 1
            while j < k and listed[i + j] - listed[i + j - 1] == gap:
                j += 1
            # np.ndarray over the buffer: as_strided's array-interface detour costs
            # more than the multiply for a block of a few windows
            view = np.ndarray((j, params.n_frames, params.n_fft), dtype=buffer.dtype,
                              buffer=buffer, offset=listed[i] * step,
                              strides=(gap * step, params.hop * step, step))
            np.multiply(view, hann, out=frames[row:row + j])
            i, row = i + j, row + j
            if row == frames.shape[0]:
                out[done:done + row] = _logmel(frames, params)
                done, row = done + row, 0
    if row:
        out[done:done + row] = _logmel(frames[:row], params)
    return out


def _waves(spans: Sequence[tuple[Samples, npt.NDArray[np.int64]]], window: int) -> F32:
    """``wave-v1`` features: the windows' samples, float32 (N, window)."""
    n = sum(int(starts.shape[0]) for _, starts in spans)
    out = np.empty((n, window), dtype=np.float32)
    row = 0
    for signal, starts in spans:
        scale = np.float32(1.0 / PCM16_SCALE) if signal.dtype == np.int16 else np.float32(1.0)
        for start in starts.tolist():
            if start < 0 or start + window > signal.shape[0]:
                raise ValueError(f"a window at sample {start} does not fit a signal of "
                                 f"{signal.shape[0]} samples")
            np.multiply(signal[start:start + window], scale, out=out[row])
            row += 1
    return out


def _logmel(frames: F32, params: FeatureParams) -> F32:
    """log(mel power) of windowed frames (N, n_frames, n_fft), which it overwrites."""
    n = frames.shape[0]
    if n == 0:
        return np.zeros((0, *params.shape), dtype=np.float32)
    # scipy's FFT computes float32 in float32, ~5x faster than numpy's here
    spec = scipy.fft.rfft(frames, axis=-1, overwrite_x=True)
    first, end, bank = _band(params)
    pairs = spec[..., first:end].view(np.float32)  # re, im, re, im, ...
    np.square(pairs, out=pairs)
    power = pairs[..., 0::2] + pairs[..., 1::2]
    mel: F32 = power.reshape(-1, end - first) @ bank
    mel += np.float32(params.log_floor)
    np.log(mel, out=mel)
    return mel.reshape(n, *params.shape)


def frame_windows(signal: F32, params: FeatureParams, hop_samples: int) -> F32:
    """Consecutive windows of a mono signal, shape (N, window_samples); the tail
    shorter than a window is dropped. The hop is the analysis hop, not the FFT's."""
    w = params.window_samples
    if signal.shape[0] < w:
        return np.zeros((0, w), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(signal.astype(np.float32, copy=False), w)
    return np.ascontiguousarray(view[::hop_samples])
