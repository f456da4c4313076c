"""A spectrogram as a PNG image, computed on the server so that every browser (Safari
included) shows the same picture without Web Audio: the dashboard's channel view and
review tiles.

``spectrogram(samples, rate)`` gives dB levels (frequency × time, low frequencies at
the bottom) pooled to the asked size; ``png(levels)`` colours them (a perceptually
ordered map, dark blue → yellow, as viridis) and encodes an RGB PNG with zlib only.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import numpy.typing as npt

from bus_schemas.pcm import int16_to_float32

F32 = npt.NDArray[np.float32]

FLOOR_DB = -110.0  # the bottom of the colour scale (dBFS per bin)
TOP_DB = -20.0
# anchors of the colour map (viridis' ends and middle), interpolated to 256 entries
_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98],
                     [253, 231, 37]], dtype=np.float64)
_LUT = np.stack([np.interp(np.linspace(0, len(_ANCHORS) - 1, 256),
                           np.arange(len(_ANCHORS)), _ANCHORS[:, c])
                 for c in range(3)], axis=1).round().astype(np.uint8)


def spectrogram(samples: npt.NDArray[np.floating] | npt.NDArray[np.int16], rate: int,
                width: int = 600, height: int = 128, n_fft: int = 1024) -> F32:
    """Levels in dBFS, shape (height, columns ≤ width), row 0 the highest frequency.
    Frames are pooled by their maximum (a short call stays visible), bins likewise."""
    if width < 1 or height < 1:
        raise ValueError("width and height are at least 1")
    x = np.asarray(samples)
    x = int16_to_float32(x) if x.dtype == np.int16 else x.astype(np.float32)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    hop = max(n_fft // 4, (len(x) - n_fft) // (width * 2) + 1)  # ≥ 2 frames per column
    frames = 1 + (len(x) - n_fft) // hop
    starts = np.arange(frames) * hop
    window = np.hanning(n_fft).astype(np.float32)
    power = np.empty((frames, n_fft // 2 + 1), dtype=np.float32)
    for i in range(0, frames, 256):  # bounded memory: 256 frames at a time
        block = x[starts[i:i + 256, None] + np.arange(n_fft)] * window
        power[i:i + 256] = np.abs(np.fft.rfft(block, axis=1)) ** 2
    power /= float(np.sum(window) ** 2 / 4)  # a full-scale sine at 0 dB
    columns = min(width, frames)
    pooled = np.maximum.reduceat(power, np.linspace(0, frames, columns, endpoint=False)
                                 .astype(int), axis=0)
    rows = min(height, pooled.shape[1])
    pooled = np.maximum.reduceat(pooled, np.linspace(0, pooled.shape[1], rows, endpoint=False)
                                 .astype(int), axis=1)
    levels = 10.0 * np.log10(np.maximum(pooled, 1e-20))
    return np.ascontiguousarray(levels.T[::-1]).astype(np.float32)


def png(levels: F32, floor_db: float = FLOOR_DB, top_db: float = TOP_DB) -> bytes:
    """An RGB PNG of ``levels`` (dB) coloured from ``floor_db`` to ``top_db``."""
    scaled = (levels - floor_db) / (top_db - floor_db)
    index = np.clip(np.nan_to_num(scaled, nan=0.0) * 255, 0, 255).astype(np.uint8)
    rgb = _LUT[index]  # (h, w, 3)
    h, w = index.shape
    raw = np.concatenate([np.zeros((h, 1), dtype=np.uint8), rgb.reshape(h, w * 3)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b""))
