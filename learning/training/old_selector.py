"""The shipped log-mel selector, decided on the windows of the cross-validation table.

The old selector (``models/selector``) trained on the default packages, so it is
compared with the new one on the packages it never heard: for each such window
(0.975 s at 48 kHz) its two 0.5 s halves are scored, the scores averaged and decided
by the model's own rule (threshold and margin); below the energy gate it is ``quiet``
as for every selector.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from audio.decode import AudioDecodeError, decode_all
from inference.features import window_features
from inference.hearing import WINDOW_48K
from inference.modelfolder import ModelFolder
from inference.scoring import TfliteModel, decide
from learning.corpus.manifest import CorpusFile
from learning.datasets.format import QUIET
from learning.embeddings.cache import RATE
from learning.training.crossval import WindowTable


def decisions(table: WindowTable, files: Sequence[CorpusFile], cache: Path,
              folder: Path, packages: Sequence[str]) -> dict[int, str]:
    """Row → the old selector's decision, for the rows of ``packages``."""
    model = TfliteModel(ModelFolder.load(folder))
    meta = model.folder.meta
    params = model.features
    half = params.window_samples
    out: dict[int, str] = {}
    rows = np.flatnonzero(np.isin(table.package, list(packages)))
    by_file: dict[int, list[int]] = {}
    for row in rows.tolist():
        by_file.setdefault(int(table.recording[row]), []).append(row)
    for rec, idx in sorted(by_file.items()):
        try:
            audio, _ = decode_all(cache / files[rec].local, RATE)
        except AudioDecodeError:
            continue
        mono = np.pad(audio.mean(axis=0).astype(np.float32), (0, WINDOW_48K))
        starts = table.start[idx]
        halves = np.stack([mono[s + o:s + o + half] for s in starts.tolist()
                           for o in (0, WINDOW_48K - half)])
        scores = model.predict(window_features(halves, params))
        mean: npt.NDArray[np.float32] = scores.reshape(len(idx), 2, -1).mean(axis=1)
        for row, s in zip(idx, mean, strict=True):
            out[row] = QUIET if table.quiet[row] else decide(
                s, meta.labels, meta.decision.threshold, meta.decision.margin)[0]
    return out
