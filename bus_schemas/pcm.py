"""The one PCM codec: little-endian s16 / f32 samples ↔ float32 in [-1, 1].

The scale is FFmpeg's: int16 ``x`` is the float ``x / 32768``, and a float
``f`` becomes ``round(f * 32768)`` clipped to [-32768, 32767]; so a WAV decoded
by FFmpeg and published as s16 chunks keeps its exact samples. Every conversion
between integer PCM and float audio in Tidzam goes through here.
"""

from __future__ import annotations

from typing import Literal, cast

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I16 = npt.NDArray[np.int16]
Samples = I16 | F32  # a chunk's samples as they travel: int16 PCM or float32
Encoding = Literal["s16le", "f32le"]

PCM16_SCALE = 32768.0
PCM16_MIN, PCM16_MAX = -32768, 32767


def to_float32(pcm: bytes, encoding: Encoding = "s16le") -> F32:
    """PCM bytes as float32 samples, shape (n,)."""
    if encoding == "s16le":
        return int16_to_float32(np.frombuffer(pcm, dtype="<i2"))
    return np.frombuffer(pcm, dtype="<f4").astype(np.float32)


def samples_of(pcm: bytes, encoding: Encoding = "s16le") -> Samples:
    """PCM bytes as their samples, shape (n,), without a copy: int16 for s16le,
    float32 for f32le (``as_float32`` scales either to float)."""
    return np.frombuffer(pcm, dtype="<i2" if encoding == "s16le" else "<f4")


def as_float32(samples: Samples) -> F32:
    """``samples_of``'s samples (any shape) as float32 in [-1, 1]."""
    if samples.dtype == np.int16:
        return int16_to_float32(cast(I16, samples))
    return samples.astype(np.float32, copy=False)


def int16_to_float32(pcm: npt.NDArray[np.integer]) -> F32:
    """int16 samples (any shape) as float32 in [-1, 1)."""
    return pcm.astype(np.float32) / np.float32(PCM16_SCALE)


def to_int16(samples: npt.ArrayLike) -> I16:
    """float samples (any shape) as int16, rounded and clipped."""
    scaled = np.multiply(np.asarray(samples, dtype=np.float32), np.float32(PCM16_SCALE))
    np.rint(scaled, out=scaled)  # what np.round does: halves to even
    np.clip(scaled, PCM16_MIN, PCM16_MAX, out=scaled)
    return scaled.astype(np.int16)


def clip_int16(values: npt.ArrayLike) -> I16:
    """Integer samples from outside (a browser's PCM16 list) clipped into int16."""
    return np.clip(np.asarray(values, dtype=np.int64), PCM16_MIN, PCM16_MAX).astype(np.int16)


def from_float32(samples: npt.ArrayLike, encoding: Encoding = "s16le") -> bytes:
    """float samples (n,) as PCM bytes (s16le clipped, or f32le)."""
    if encoding == "s16le":
        return to_int16(samples).astype("<i2").tobytes()
    return np.asarray(samples, dtype="<f4").tobytes()


GAIN_DB_MIN, GAIN_DB_MAX = -60.0, 24.0  # what a mixer may set


def with_gain(samples: Samples, gain_db: float, muted: bool = False) -> Samples:
    """Samples as a mixer channel passes them: ``gain_db`` applied (rounded and clipped
    to the samples' own type, so int16 stays int16), silence when ``muted``. 0 dB and
    not muted: the samples themselves, no copy."""
    if muted:
        return np.zeros_like(samples)
    if gain_db == 0.0:
        return samples
    scaled: F32 = samples.astype(np.float32)
    scaled *= np.float32(10.0 ** (gain_db / 20.0))
    if samples.dtype == np.int16:
        np.rint(scaled, out=scaled)
        np.clip(scaled, PCM16_MIN, PCM16_MAX, out=scaled)
        out: I16 = scaled.astype(np.int16)
        return out
    np.clip(scaled, -1.0, 1.0, out=scaled)
    return scaled
