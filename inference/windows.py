"""Place analysis windows on a channel's sample grid, chunk by chunk.

Window ``i`` of a source session starts at sample ``i * hop`` (``first_sample`` 0
is the session's first sample). A chunk owns the windows that START inside it;
a window that runs past the chunk's end takes its tail from the next chunk. So
every window belongs to exactly one chunk: none lost or doubled at chunk
boundaries, whichever classifier instance gets which chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Windows:
    """``samples``: float32 (N, window) mono at the chunk's rate; ``starts``: the
    grid index of each window's first sample, shape (N,)."""

    samples: F32
    starts: npt.NDArray[np.int64]


def hop_samples(window: int, overlap: float) -> int:
    """The grid's step: ``window`` samples with ``overlap`` (0 ≤ overlap < 1) shared
    between neighbours, at least one sample."""
    return max(1, round(window * (1.0 - overlap)))


def owned_starts(first_sample: int, n_samples: int, hop: int) -> npt.NDArray[np.int64]:
    """Grid starts ``i * hop`` that fall in [first_sample, first_sample + n_samples)."""
    first_i = -(-first_sample // hop)
    last_i = (first_sample + n_samples - 1) // hop
    return np.arange(first_i, last_i + 1, dtype=np.int64) * hop


def samples_needed_after(first_sample: int, n_samples: int, hop: int, window: int) -> int:
    """How many samples after this chunk its last owned window needs (0: none)."""
    starts = owned_starts(first_sample, n_samples, hop)
    if not starts.size:
        return 0
    return max(0, int(starts[-1]) + window - (first_sample + n_samples))


def cut(samples: F32, first_sample: int, following: F32 | None, hop: int,
        window: int) -> Windows:
    """The complete windows owned by a chunk.

    samples: float32 (n,) of this chunk; following: float32 (m,) samples that come
    right after it (the next chunk), or None at the end of a session, where windows
    that would run past the end are dropped.
    """
    n = samples.shape[0]
    starts = owned_starts(first_sample, n, hop)
    data = samples if following is None else np.concatenate([samples, following])
    offsets = starts - first_sample
    complete = offsets + window <= data.shape[0]
    starts, offsets = starts[complete], offsets[complete]
    if not starts.size:
        return Windows(np.zeros((0, window), dtype=np.float32), starts)
    view = np.lib.stride_tricks.sliding_window_view(data, window)
    return Windows(np.ascontiguousarray(view[offsets], dtype=np.float32), starts)
