"""Place analysis windows on a channel's sample grid, chunk by chunk.

Window ``i`` of a source session starts at sample ``i * hop`` (``first_sample`` 0
is the session's first sample). A chunk owns the windows that START inside it;
a window that runs past the chunk's end takes its tail from the next chunk. So
every window belongs to exactly one chunk: none lost or doubled at chunk
boundaries, whichever classifier instance gets which chunk.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def hop_samples(window: int, overlap: float) -> int:
    """The grid's step: ``window`` samples with ``overlap`` (0 ≤ overlap < 1) shared
    between neighbours, at least one sample."""
    return max(1, round(window * (1.0 - overlap)))


def owned_starts(first_sample: int, n_samples: int, hop: int) -> npt.NDArray[np.int64]:
    """Grid starts ``i * hop`` that fall in [first_sample, first_sample + n_samples)."""
    first_i = -(-first_sample // hop)
    last_i = (first_sample + n_samples - 1) // hop
    return np.arange(first_i, last_i + 1, dtype=np.int64) * hop


def owned_range(first_sample: int, n_samples: int, hop: int) -> tuple[int, int] | None:
    """The first and last grid starts in [first_sample, first_sample + n_samples)
    (None: none falls there); ``owned_starts`` without an array."""
    first_i = -(-first_sample // hop)
    last_i = (first_sample + n_samples - 1) // hop
    return (first_i * hop, last_i * hop) if last_i >= first_i else None


def samples_needed_after(first_sample: int, n_samples: int, hop: int, window: int) -> int:
    """How many samples after this chunk its last owned window needs (0: none)."""
    owned = owned_range(first_sample, n_samples, hop)
    if owned is None:
        return 0
    return max(0, owned[1] + window - (first_sample + n_samples))
