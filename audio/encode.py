"""Writing audio files: the one encoder (PyAV), for the archive's hour files and the
extractor's samples.

``AudioWriter`` takes (n, channels) int16 blocks (interleaved as they travel) and
writes FLAC (lossless) up to 8 channels, Ogg/Opus beyond (FLAC's limit; Opus with
mapping family 255: discrete channels, not surround). ``write_flac`` writes one
block in one call.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import av
import numpy as np
import numpy.typing as npt
from av.audio.stream import AudioStream

from bus_schemas import pcm

I16 = npt.NDArray[np.int16]
FLAC_MAX_CHANNELS = 8


class AudioWriter:
    """One open audio file: (n, channels) int16 blocks in, encoded frames out."""

    def __init__(self, path: Path, channels: int, rate: int) -> None:
        self.path = path
        self.channels = channels
        self.layout = av.AudioLayout(f"{channels} channels")
        lossless = channels <= FLAC_MAX_CHANNELS
        self._out = av.open(str(path), "w", format="flac" if lossless else "ogg")
        codec = "flac" if lossless else "libopus"
        self._stream = cast(AudioStream, self._out.add_stream(codec, rate=rate,
                                                              layout=self.layout))
        if not lossless:
            self._stream.codec_context.options = {"mapping_family": "255"}
        self.rate = rate
        self._float = not lossless

    def write(self, block: I16) -> None:
        data: npt.NDArray[np.generic] = block
        fmt = "s16"
        if self._float:
            data, fmt = pcm.int16_to_float32(block), "flt"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data).reshape(1, -1),
                                           format=fmt, layout=self.layout)
        frame.sample_rate = self.rate
        for packet in self._stream.encode(frame):
            self._out.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode(None):
            self._out.mux(packet)
        self._out.close()


def write_flac(path: Path, samples: I16, rate: int) -> None:
    """Write (channels, n) int16 samples as FLAC, atomically: a reader never sees half
    a file (written beside it, then renamed)."""
    block = np.atleast_2d(samples)
    if block.shape[0] > FLAC_MAX_CHANNELS:
        raise ValueError(f"FLAC holds at most {FLAC_MAX_CHANNELS} channels, not {block.shape[0]}")
    part = path.with_name(f".{path.name}.part")
    writer = AudioWriter(part, block.shape[0], rate)
    try:
        writer.write(np.ascontiguousarray(block.T))
    finally:
        writer.close()
    os.replace(part, path)
