"""Small audio files written by the tests themselves (no codec needed: WAV)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from inference.modelfolder import ModelFolder
from inference.registry import DEFAULT_SELECTOR
from inference.windows import hop_samples


def write_pcm(path: Path, audio: np.ndarray, rate: int = 48_000) -> Path:
    """A 16-bit WAV of ``audio``: float (channels, n) in [-1, 1]."""
    pcm = (np.clip(np.asarray(audio).T, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(pcm.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


def write_wav(path: Path, seconds: float, rate: int = 48_000, channels: int = 1,
              seed: int = 0) -> Path:
    """Noise bursts alternating with near-silence, one different pattern per channel."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    data = np.zeros((n, channels), dtype=np.float32)
    for ch in range(channels):
        gate = (np.floor(t * (1 + ch)) % 2 == 0).astype(np.float32)
        data[:, ch] = rng.normal(0, 0.3, n) * gate + rng.normal(0, 0.001, n)
    return write_pcm(path, data.T, rate)


def expected_windows(n_samples: int, window: int, hop: int) -> int:
    """How many windows i*hop .. i*hop+window fit in a session of n samples."""
    return 0 if n_samples < window else (n_samples - window) // hop + 1


def default_grid(overlap: float = 0.25) -> tuple[int, int]:
    """(window, hop) in samples of the default selector (a stack's) at ``overlap``."""
    window = ModelFolder.load(DEFAULT_SELECTOR).params.window_samples
    return window, hop_samples(window, overlap)
