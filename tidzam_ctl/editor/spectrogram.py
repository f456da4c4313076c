"""A log-mel window drawn as text: half blocks on the "magma" colour ramp.

Features: log-mel windows float32 (frames, mels), natural log of power, at the
dataset's ``FeatureParams`` (0.5 s, 48 kHz by default).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt
from rich.color import Color
from rich.style import Style
from rich.text import Text

from inference.features import F32, FeatureParams, frame_windows, window_features

# The "magma" colour map at five stops: near black for the floor, pale yellow at the peak.
_MAGMA = np.array([(0, 0, 4), (81, 18, 124), (183, 55, 121), (252, 137, 97), (252, 253, 191)],
                  dtype=np.float64)
LEVELS = 32  # colours in the ramp


@lru_cache(maxsize=LEVELS)
def ramp_colour(level: int) -> Color:
    """Colour of ``level`` (0 = floor .. LEVELS - 1 = peak) on the magma ramp."""
    x = level / (LEVELS - 1) * (len(_MAGMA) - 1)
    i = min(int(x), len(_MAGMA) - 2)
    rgb = _MAGMA[i] + (x - i) * (_MAGMA[i + 1] - _MAGMA[i])
    return Color.from_rgb(*(float(c) for c in rgb))


@lru_cache(maxsize=LEVELS * LEVELS)
def _cell_style(top: int, bottom: int) -> Style:
    return Style(color=ramp_colour(top), bgcolor=ramp_colour(bottom))


def _resize(a: F32, n: int, axis: int) -> F32:
    """``a`` with ``n`` entries along ``axis``: block means when shrinking, repeats
    (nearest) when growing."""
    size = a.shape[axis]
    edges = (np.arange(n) * size) // n
    sums = np.add.reduceat(a, edges, axis=axis)
    counts = np.maximum(np.diff(np.append(edges, size)), 1).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis] = n
    out: F32 = (sums / counts.reshape(shape)).astype(np.float32)
    return out


def spectrogram_levels(features: F32, width: int, pixel_rows: int, range_db: float = 80.0
                       ) -> npt.NDArray[np.int_]:
    """Colour levels (pixel_rows, width), int in [0, LEVELS): row 0 the highest mel band.

    features: log-mel (frames, mels). The peak is the top colour; the floor is the
    lowest value, or ``range_db`` (dB of power) below the peak if that is higher.
    """
    grid = _resize(_resize(features, width, 0), pixel_rows, 1)  # (width, pixel_rows)
    hi = float(grid.max())
    lo = max(float(grid.min()), hi - range_db / 10.0 * float(np.log(10.0)))  # ln(power)
    if hi <= lo:  # a flat window (digital silence): all floor
        return np.zeros((pixel_rows, width), np.int_)
    scaled = np.clip((grid - lo) / (hi - lo), 0.0, 1.0)
    levels: npt.NDArray[np.int_] = np.rint(scaled * (LEVELS - 1)).astype(np.int_)
    return levels.T[::-1]


def render_spectrogram(features: F32, width: int | None = None, height: int | None = None,
                       range_db: float = 80.0) -> Text:
    """A log-mel window (frames, mels) as ``height`` lines of ``width`` half blocks.

    Time runs left to right, low frequencies at the bottom; each character is two
    pixels: ``▀`` coloured with the upper one, on a background of the lower one.
    Default size: one column per frame, one line per two mel bands.
    """
    frames, mels = features.shape
    if frames == 0 or mels == 0:
        return Text("(empty window)")
    width = width or frames
    height = height or (mels + 1) // 2
    levels = spectrogram_levels(features, width, 2 * height, range_db)
    text = Text(no_wrap=True, end="")
    for r in range(height):
        for top, bottom in zip(levels[2 * r], levels[2 * r + 1], strict=True):
            text.append("▀", _cell_style(int(top), int(bottom)))
        if r < height - 1:
            text.append("\n")
    return text


def audio_spectrogram(mono: F32, params: FeatureParams) -> F32:
    """Log-mel frames (frames, mels) of mono audio (n,) at ``params.sample_rate``: cut
    into consecutive windows (the last one zero-padded), features side by side."""
    w = params.window_samples
    padded = np.zeros(max(w, -(-mono.shape[0] // w) * w), np.float32)
    padded[: mono.shape[0]] = mono
    feats = window_features(frame_windows(padded, params, w), params)
    out: F32 = feats.reshape(-1, params.n_mels)
    return out
