"""Streaming resampling of mono PCM pushed in pieces (live streams, JACK outputs)."""

from __future__ import annotations

import av
import numpy as np
import numpy.typing as npt

from audio.decode import F32, planar


class PcmResampler:
    """Streaming resampler for mono PCM16 pushed in pieces (live streams).

    ``push(pcm)`` takes int16 samples at ``from_rate`` (any length) and returns the
    float32 samples, shape (n,), at ``to_rate`` produced so far; ``flush()`` the rest.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate <= 0 or from_rate > 384_000:
            raise ValueError(f"sample rate {from_rate} Hz is not a usable rate")
        self.from_rate = from_rate
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=to_rate)

    def push(self, pcm: npt.NDArray[np.int16]) -> F32:
        if pcm.size == 0:
            return np.zeros(0, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.int16)
                                           .reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.from_rate
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> F32:
        return self._collect(self._resampler.resample(None))

    @staticmethod
    def _collect(frames: list[av.AudioFrame]) -> F32:
        if not frames:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([planar(f.to_ndarray(), 1)[0] for f in frames])
