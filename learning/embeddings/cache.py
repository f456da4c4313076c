"""The front end's view of every corpus window, computed once and cached.

For each corpus file (decoded at 48 kHz, channels averaged): windows of 0.975 s
(``inference.hearing.WINDOW_48K``) every ``hop_s``, at most ``max_windows`` per file
(evenly spread over a long recording), each with YAMNet's embedding and AudioSet
scores (``inference.yamnet``), the high-band shares and the RMS level
(``inference.hearing``). Saved per file as ``<cache>/embeddings/<key>/<sha256>.npz``;
the key changes with the front end's hash and these parameters, so a stale cache
is never read.

Labels follow the energy gate, as the compiled datasets do: a window below
``QUIET_GATE_DB`` is ``quiet`` whatever its file's class; a window more than
``relative_gate_db`` below its file's loudest is dropped (a gap between calls).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from audio.decode import AudioDecodeError, decode_all
from inference.hearing import QUIET_GATE_DB, WINDOW_48K, highband, rms_db
from inference.yamnet import FRAME_SAMPLES, YamnetFrontEnd, to_16k
from learning.corpus.manifest import CorpusFile
from learning.datasets.format import QUIET

F32 = npt.NDArray[np.float32]
RATE = 48_000
DROPPED = ""


@dataclass(frozen=True)
class WindowConfig:
    hop_s: float = 0.4875
    max_windows: int = 40
    relative_gate_db: float = 30.0

    def key(self, front_end_sha256: str) -> str:
        text = json.dumps({"front_end": front_end_sha256, "version": 1, **asdict(self)},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FileWindows:
    """One file's windows: ``embeddings`` (N, 1024), ``scores`` (N, 521) (AudioSet),
    ``highband`` (N, 6), ``rms_db`` (N,), ``starts`` (N,) in samples at 48 kHz."""

    embeddings: F32
    scores: F32
    highband: F32
    rms_db: F32
    starts: npt.NDArray[np.int64]

    def labels(self, file_class: str, cfg: WindowConfig) -> list[str]:
        """Each window's label by the energy gate (``DROPPED`` for a gap)."""
        if not self.rms_db.size:
            return []
        peak = float(self.rms_db.max())
        out = []
        for level in self.rms_db.tolist():
            if level < QUIET_GATE_DB:
                out.append(QUIET)
            elif file_class != QUIET and level < peak - cfg.relative_gate_db:
                out.append(DROPPED)
            else:
                out.append(file_class)
        return out


def window_starts(n_samples: int, cfg: WindowConfig) -> npt.NDArray[np.int64]:
    """Start samples of a file's windows: every hop, at most ``max_windows`` evenly
    spread; one window (zero-padded) for a file shorter than a window."""
    hop = round(cfg.hop_s * RATE)
    count = 1 + max(0, n_samples - WINDOW_48K) // hop
    index = np.arange(count)
    if count > cfg.max_windows:
        index = np.unique(np.linspace(0, count - 1, cfg.max_windows).round().astype(np.int64))
    return (index * hop).astype(np.int64)


def compute(audio: F32, front_end: YamnetFrontEnd, cfg: WindowConfig) -> FileWindows:
    """The windows of mono 48 kHz audio (n,) through the front end."""
    if audio.shape[0] < WINDOW_48K:
        audio = np.pad(audio, (0, WINDOW_48K - audio.shape[0]))
    starts = window_starts(audio.shape[0], cfg)
    windows = np.stack([audio[s:s + WINDOW_48K] for s in starts.tolist()])
    audio16k = to_16k(audio, RATE)  # the whole file at once: no edge at each window
    audio16k = np.pad(audio16k, (0, FRAME_SAMPLES))
    step = RATE // 16_000
    frames = np.stack([audio16k[s // step:s // step + FRAME_SAMPLES] for s in starts.tolist()])
    out = front_end(frames)
    return FileWindows(out.embeddings, out.scores, highband(windows), rms_db(windows), starts)


def _load(path: Path) -> FileWindows:
    with np.load(path) as data:
        return FileWindows(data["embeddings"].astype(np.float32),
                           data["scores"].astype(np.float32), data["highband"],
                           data["rms_db"], data["starts"])


def corpus_windows(files: Sequence[CorpusFile], cache: Path, cfg: WindowConfig,
                   front_end: YamnetFrontEnd | None = None,
                   progress: Callable[[str], None] | None = None
                   ) -> list[FileWindows | AudioDecodeError]:
    """Every file's windows, from the cache or computed (and cached); a file that
    cannot be decoded gives its error instead (the caller reports and skips it)."""
    fe = front_end or YamnetFrontEnd()
    folder = cache / "embeddings" / cfg.key(fe.meta.sha256)
    folder.mkdir(parents=True, exist_ok=True)
    out: list[FileWindows | AudioDecodeError] = []
    for entry in files:
        path = folder / f"{entry.sha256}.npz"
        if path.is_file():
            out.append(_load(path))
        else:
            try:
                audio, _ = decode_all(cache / entry.local, RATE)
            except AudioDecodeError as exc:
                out.append(exc)
                if progress is not None:
                    progress(entry.path)
                continue
            got = compute(audio.mean(axis=0).astype(np.float32), fe, cfg)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, embeddings=got.embeddings.astype(np.float16),
                     scores=got.scores.astype(np.float16), highband=got.highband,
                     rms_db=got.rms_db, starts=got.starts)
            tmp.replace(path)
            out.append(_load(path))  # what a later run reads: float16-rounded
        if progress is not None:
            progress(entry.path)
    return out
