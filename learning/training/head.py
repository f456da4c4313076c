"""The selector's head over the YAMNet front end: one sigmoid per class.

Inputs per window (``inference.hearing``): YAMNet's embedding and the high-band
shares (z-scored, ``E``), and the log of AudioSet's scores folded into the classes
(``M``, one column per class). A class's logit is ``E @ We + M @ Wm + b``; ``Wm``
starts at, and is pulled towards, ``alpha`` times the identity: with no evidence the
head *is* the zero-shot AudioSet mapping, and the embedding only moves it where
the training recordings agree (L2 ``l2_embedding`` on ``We``, ``l2_mapping`` on
``Wm - alpha I``). Targets are multi-hot (a mixture's window is positive for each
of its classes); each class's windows weigh as much as any other's, and inside a
class each recording group weighs by the square root of its windows, so one long
soundscape cannot outvote twenty short recordings.

Fitted by L-BFGS (scipy) in seconds on the 2-core machine; no TensorFlow. The
fitted head is plain arrays (``inference.hearing.HeadWeights``), saved in the model
folder and run with numpy live.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.optimize

from inference.hearing import MAP_FLOOR, HeadWeights

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class HeadConfig:
    l2_embedding: float = 3.0
    l2_mapping: float = 0.1
    alpha: float = 1.0
    max_iter: int = 300


def sample_weights(targets: npt.NDArray[np.bool_], groups: Sequence[str]) -> F32:
    """Each class weighs the same; inside a class, a group by sqrt(its windows)."""
    n, k = targets.shape
    groups_arr = np.asarray(groups)
    w = np.zeros(n, dtype=np.float64)
    for c in range(k):
        idx = np.flatnonzero(targets[:, c])
        if not idx.size:
            continue
        _, inverse, counts = np.unique(groups_arr[idx], return_inverse=True, return_counts=True)
        wc = 1.0 / np.sqrt(counts[inverse])
        w[idx] += wc / wc.sum()
    total = w.sum()
    return (w / total if total else w).astype(np.float32)


def fit(embedding: F32, mapped: F32, targets: npt.NDArray[np.bool_], groups: Sequence[str],
        cfg: HeadConfig = HeadConfig()) -> HeadWeights:
    """Fit the head: ``embedding`` (N, D), ``mapped`` (N, K), ``targets`` (N, K) bool."""
    mean = embedding.mean(axis=0)
    std = embedding.std(axis=0) + 1e-6
    z = ((embedding - mean) / std).astype(np.float64)
    m = np.log(mapped.astype(np.float64) + MAP_FLOOR)
    y = targets.astype(np.float64)
    w = sample_weights(targets, groups).astype(np.float64)[:, None]
    d, k = z.shape[1], y.shape[1]
    prior = cfg.alpha * np.eye(k)

    def unpack(t: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], ...]:
        return t[:d * k].reshape(d, k), t[d * k:d * k + k * k].reshape(k, k), t[d * k + k * k:]

    def loss(t: npt.NDArray[np.float64]) -> tuple[float, npt.NDArray[np.float64]]:
        we, wm, b = unpack(t)
        logits = z @ we + m @ wm + b
        p = 1.0 / (1.0 + np.exp(-logits))
        # weighted binary cross-entropy, from the logits (stable)
        bce = np.logaddexp(0.0, logits) - y * logits
        value = float((w * bce).sum() + cfg.l2_embedding * (we ** 2).sum()
                      + cfg.l2_mapping * ((wm - prior) ** 2).sum())
        g = w * (p - y)
        grad = np.concatenate([(z.T @ g + 2 * cfg.l2_embedding * we).ravel(),
                               (m.T @ g + 2 * cfg.l2_mapping * (wm - prior)).ravel(),
                               g.sum(axis=0)])
        return value, grad

    start = np.concatenate([np.zeros(d * k), prior.ravel(), np.zeros(k)])
    result = scipy.optimize.minimize(loss, start, jac=True, method="L-BFGS-B",
                                     options={"maxiter": cfg.max_iter})
    we, wm, b = unpack(result.x)
    return HeadWeights(mean.astype(np.float32), std.astype(np.float32), we.astype(np.float32),
                       wm.astype(np.float32), b.astype(np.float32))
