"""Decoded audio as typed blocks: the samples and the rate they are at."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Block:
    """A run of decoded audio: ``samples`` float32 (channels, n) in [-1, 1], every
    channel of the stream, at ``rate`` Hz."""

    samples: F32
    rate: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def frames(self) -> int:
        """Samples per channel."""
        return int(self.samples.shape[1])

    @property
    def seconds(self) -> float:
        return self.frames / self.rate
