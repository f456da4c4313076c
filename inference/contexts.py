"""The raw audio around each window, for the cascade's audio experts (BirdNET).

An audio expert hears ``C`` samples around a window of ``W`` (BirdNET: 3 s =
144,000 samples at 48 kHz around a 0.5 s window of 24,000). The context of the
window starting at grid sample ``s`` is centred on it::

    [s - lead, s - lead + C)   with lead = (C - W) // 2   (BirdNET: 60,000 = 1.25 s)

so the classifier needs ``lead`` samples before a chunk's first window (from the
chunks before it, ``audio_needed_before``) and ``C - lead`` after its last
window's start (from the chunks after it, ``audio_needed_after``: the same
look-ahead that completes a window's tail, reaching further).

Where the session's audio does not reach that far, the context is shifted, not
padded (``context_start``): at the start of a session or after a gap it begins
at the first sample there is, at the end of a session it ends at the last one.
The window always lies inside its context and the expert hears only real audio;
a session shorter than ``C`` is zero-padded after its end (BirdNET-Analyzer pads
its short last segment with zeros too). At the live edge the classifier waits
for the audio after a window exactly as it waits for a window's tail (nak, retry),
so contexts are centred there too, at the cost of ``C - lead - W`` more latency
(1.25 s for BirdNET); only when a source stalls for good do the last windows get
the context that ends at the last sample received.

The audio around a chunk comes from the stream, not from what this instance
happened to see: the same chunk gets the same contexts whichever instance scores
it, and a redelivery scores the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bus_schemas import pcm
from bus_schemas.pcm import Samples
from inference.windows import owned_range

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def context_lead(window: int, context: int) -> int:
    """Samples of a centred ``context`` before the start of its ``window``."""
    return (context - window) // 2


def audio_needed_after(first_sample: int, n_samples: int, hop: int, window: int,
                       context: int) -> int:
    """How many samples after this chunk its last owned window and that window's
    context need (0: none). A context at the start of a session, shifted forward,
    reaches further than a centred one."""
    owned = owned_range(first_sample, n_samples, hop)
    if owned is None:
        return 0
    last = owned[1]
    end = max(last + window, max(0, last - context_lead(window, context)) + context)
    return max(0, end - (first_sample + n_samples))


def audio_needed_before(first_sample: int, n_samples: int, hop: int, window: int,
                        context: int, span_end: int) -> int:
    """How many samples before this chunk the context of its first owned window
    needs (0: none), the session's audio being known up to ``span_end``: a context
    at its end, shifted back, reaches further than a centred one."""
    owned = owned_range(first_sample, n_samples, hop)
    if owned is None:
        return 0
    begin = max(0, min(owned[0] - context_lead(window, context), span_end - context))
    return max(0, first_sample - begin)


def context_start(window_start: int, window: int, context: int, span_first: int,
                  span_end: int) -> int:
    """Grid index of the first sample of a window's context: centred, then shifted
    into the audio there is, [span_first, span_end); ``span_first`` when that audio
    is shorter than ``context`` (the rest is zero-padded at the end)."""
    centred = window_start - context_lead(window, context)
    return max(span_first, min(centred, span_end - context))


@dataclass(frozen=True)
class Span:
    """Contiguous audio of one session around one chunk: (n,) mono at the chunk's
    rate, float32 or int16 PCM (``bus_schemas.pcm``), its first sample at grid
    index ``first_sample``."""

    samples: Samples
    first_sample: int

    @property
    def end_sample(self) -> int:
        return self.first_sample + int(self.samples.shape[0])


class SpanContexts:
    """``inference.cascade.WindowAudio`` of a batch: row ``i`` is the window that
    starts at grid sample ``starts[i]`` of ``spans[span_of[i]]``, at ``start_ns[i]``.
    Contexts are cut only for the rows asked (the gated ones)."""

    def __init__(self, window: int, spans: Sequence[Span], span_of: I64, starts: I64,
                 start_ns: I64) -> None:
        if not span_of.shape == starts.shape == start_ns.shape:
            raise ValueError("span_of, starts and start_ns must be parallel")
        self.window = window
        self.spans = tuple(spans)
        self.span_of = span_of
        self.starts = starts
        self._start_ns = start_ns

    def contexts(self, rows: npt.NDArray[np.intp], samples: int) -> F32:
        """float32 (len(rows), samples): each row's context (module docstring)."""
        out = np.zeros((len(rows), samples), dtype=np.float32)
        for k, row in enumerate(rows.tolist()):
            span = self.spans[int(self.span_of[row])]
            first = context_start(int(self.starts[row]), self.window, samples,
                                  span.first_sample, span.end_sample)
            piece = span.samples[first - span.first_sample:][:samples]
            out[k, :piece.shape[0]] = pcm.as_float32(piece)
        return out

    def start_ns(self, rows: npt.NDArray[np.intp]) -> I64:
        """UTC start (ns) of each row's window, int64 (len(rows),)."""
        return self._start_ns[rows]
