"""A stream (a file or a URL) cut into the classifier's windows, stepped one at a time.

Windows: float32 (channels, window_samples) at the feature sample rate
(``FeatureParams.sample_rate``, 48 kHz by default), window i starting at ``i * hop``.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from audio.archive import parse_archive_name
from audio.decode import AudioStream
from inference.features import F32, FeatureParams


@dataclass(frozen=True)
class StreamOrigin:
    """The source name and the wall-clock time of the first sample of a stream."""

    source: str
    start: datetime


def _source_name(text: str) -> str:
    """Letters, digits, '_' and '-' only (it goes into sample names)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:64] or "stream"


def stream_origin(location: str, now: datetime | None = None) -> StreamOrigin:
    """An archive name ``<name>-YYYY-MM-DD-HH-MM-SS.ext`` gives both; another file its
    stem and modification time (as ``replay`` does); a URL its last path part and now."""
    now = now or datetime.now(UTC)
    if "://" in location:
        tail = location.split("://", 1)[1].split("?")[0].rstrip("/")
        return StreamOrigin(_source_name(Path(tail).stem or tail), now)
    archive = parse_archive_name(location)
    if archive is not None:
        return StreamOrigin(_source_name(archive[0]), archive[1])
    path = Path(location)
    start = datetime.fromtimestamp(path.stat().st_mtime, UTC) if path.exists() else now
    return StreamOrigin(_source_name(path.stem), start)


@dataclass(frozen=True)
class StreamWindow:
    """Window ``index`` of a stream: audio float32 (channels, window_samples) at the
    feature rate, starting ``start_s`` into the stream, at wall-clock ``time``."""

    index: int
    start_s: float
    audio: F32
    time: datetime


class StreamStepper:
    """A stream's windows on the classifier's grid (window i starts at ``i * hop``),
    one at a time forward, and back through the last ``keep`` windows.

    A tail shorter than a window is dropped, except that a stream shorter than one
    window gives one window, zero-padded at its end.
    """

    def __init__(self, location: str, params: FeatureParams, hop: int, *, keep: int = 240,
                 origin: StreamOrigin | None = None) -> None:
        self.params = params
        self.hop = hop
        self.origin = origin or stream_origin(location)
        self._stream = AudioStream(location, params.sample_rate)
        self.channels = self._stream.info.channels
        self.duration_s = self._stream.info.duration_s
        self._blocks: Iterator[F32] = (b.samples for b in self._stream.blocks())
        self._buf: F32 = np.zeros((self.channels, 0), np.float32)
        self._buf_start = 0
        self._ended = False
        self._history: deque[StreamWindow] = deque(maxlen=keep)
        self._pos = -1

    @property
    def current(self) -> StreamWindow | None:
        return self._history[self._pos] if self._pos >= 0 else None

    def next(self) -> StreamWindow | None:
        """The following window (None at the end of the stream)."""
        if self._pos < len(self._history) - 1:
            self._pos += 1
            return self._history[self._pos]
        index = self._history[-1].index + 1 if self._history else 0
        window = self._read(index)
        if window is None:
            return None
        self._history.append(window)
        self._pos = len(self._history) - 1
        return window

    def back(self) -> StreamWindow | None:
        """The previous window, None before the first one kept."""
        if self._pos <= 0:
            return None
        self._pos -= 1
        return self._history[self._pos]

    def _read(self, index: int) -> StreamWindow | None:
        w, start = self.params.window_samples, index * self.hop
        while self._buf_start + self._buf.shape[1] < start + w and not self._ended:
            block = next(self._blocks, None)
            if block is None:
                self._ended = True
            else:
                self._buf = np.concatenate([self._buf, block], axis=1)
        self._buf = self._buf[:, max(0, start - self._buf_start):]
        self._buf_start = start
        if self._buf.shape[1] < w and (index > 0 or self._buf.shape[1] == 0):
            return None
        audio = np.zeros((self.channels, w), np.float32)
        audio[:, : min(w, self._buf.shape[1])] = self._buf[:, :w]
        start_s = start / self.params.sample_rate
        return StreamWindow(index, start_s, audio,
                            self.origin.start + timedelta(seconds=start_s))

    def close(self) -> None:
        self._stream.close()
