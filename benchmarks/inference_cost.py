"""CPU cost of classifying audio with a model folder, per second of audio.

    .venv/bin/python benchmarks/inference_cost.py [--folder models/selector-yamnet] [--json]

The audio is a real held-out corpus recording named in the folder's
``corpus.json`` (fetched into the corpus cache if needed), cut as the live
classifier cuts it: the model's windows every ``window * (1 - overlap)`` seconds
(``consumers.classifier.classifier``, overlap 0.25 by default: for the 1.95 s
windows of the YAMNet-based selectors 0.68 windows per audio second, for the first
selector's 0.5 s windows 2.67). It prints, per stage, the CPU time
(``time.process_time``: every thread of the process counted) per window and per
audio second:

- feature extraction as the classifier runs it (``inference.features.span_features``
  on the int16 PCM of the chunks, BLAS on one thread), in batches of the live
  batch size (for a ``wave-v1`` model: the window's samples as float);
- the model (``inference.loading.load_model``: LiteRT with XNNPACK, 1 thread; for the
  YAMNet-based selector resampling, YAMNet, the high band and the head) at batch
  sizes 1, 32 (the classifier's default) and 128.

``--yamnet`` measures the YAMNet-based selector's stages instead, on the same audio
cut into its 0.975 s windows: the 48 → 16 kHz resampling (``inference.yamnet.to_16k``,
per window), YAMNet (``YamnetFrontEnd``, 1 thread, one frame per invoke), the
high-band shares and the AudioSet folding (``inference.hearing``), and the head
(numpy; random weights of the real shapes: its cost does not depend on them).

Each figure is the median of ``--repeats`` timed passes over the same windows,
after one untimed pass. The machine's other load shows up in them: compare
figures taken on one machine at one time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from audio.decode import decode_file
from bus_schemas import pcm
from inference.features import F32, FeatureParams, frame_windows, span_features, window_features
from inference.loading import load_model
from inference.modelfolder import ModelFolder
from inference.registry import DEFAULT_SELECTOR
from learning.corpus.fetch import default_cache_dir, fetch_package
from learning.corpus.manifest import CorpusManifest

REPO = Path(__file__).resolve().parents[1]
LIVE_OVERLAP = 0.25  # consumers.classifier.service.ClassifierSettings.overlap
LIVE_BATCH = 32  # consumers.classifier.service.ClassifierSettings.batch
I16 = npt.NDArray[np.int16]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Row:
    stage: str
    batch: int
    ms_cpu_per_window: float
    ms_cpu_per_audio_s: float
    ms_wall_per_window: float


def held_out_audio(folder: ModelFolder, cache: Path, seconds: float) -> tuple[F32, str]:
    """Mono float32 (n,) at the model's rate: the longest held-out, non-quiet recording
    of the folder's corpus.json, looped or cut to ``seconds``."""
    manifest = CorpusManifest.load(folder.path / "corpus.json")
    held = [f for f in manifest.files if f.split == "test" and f.label != "quiet"]
    if not held:
        raise SystemExit(f"{folder.path}/corpus.json names no held-out recording")
    entry = max(held, key=lambda f: f.duration_s or 0.0)
    fetch_package(entry.package, cache)
    audio, _ = decode_file(cache / entry.local, folder.params.sample_rate)
    n = int(seconds * folder.params.sample_rate)
    return np.resize(audio.mean(axis=0), n).astype(np.float32), f"{entry.package}:{entry.path}"


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median (CPU s, wall s) of ``repeats`` calls of ``fn``, after a warm-up call."""
    fn()
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall)


def in_batches(fn: Callable[[Any], object], x: npt.NDArray[Any],
               batch: int) -> Callable[[], None]:
    def run() -> None:
        for i in range(0, x.shape[0] - batch + 1, batch):
            fn(x[i:i + batch])
    return run


def measure(folder: ModelFolder, pcm16: I16, starts: I64, features: F32,
            windows_per_s: float, batches: list[int], threads: int,
            repeats: int) -> list[Row]:
    params: FeatureParams = folder.params
    rows = []

    def row(stage: str, batch: int, n: int, cpu: float, wall: float) -> Row:
        per = cpu / n * 1e3
        return Row(stage, batch, round(per, 4), round(per * windows_per_s, 3),
                   round(wall / n * 1e3, 4))

    n = starts.shape[0] // LIVE_BATCH * LIVE_BATCH
    with threadpool_limits(1):
        cpu, wall = timed(in_batches(lambda s: span_features([(pcm16, s)], params), starts,
                                     LIVE_BATCH), repeats)
    rows.append(row("features (PCM16)", LIVE_BATCH, n, cpu, wall))
    model = load_model(folder, num_threads=threads)
    for batch in batches:
        n = features.shape[0] // batch * batch
        cpu, wall = timed(in_batches(model.predict, features, batch), repeats)
        rows.append(row(f"model, {threads} thread{'s' if threads > 1 else ''}", batch, n,
                        cpu, wall))
    return rows


def measure_yamnet(audio: F32, overlap: float, repeats: int) -> tuple[list[Row], float]:
    """The YAMNet-based selector's stages on ``audio`` (48 kHz mono); (rows, windows/s)."""
    from inference.hearing import (
        WINDOW_48K,
        HeadWeights,
        highband,
        mapped_scores,
        mapping_indices,
    )
    from inference.yamnet import YamnetFrontEnd, to_16k

    hop = max(1, round(WINDOW_48K * (1.0 - overlap)))
    windows_per_s = 48_000 / hop
    starts = range(0, audio.shape[0] - WINDOW_48K + 1, hop)
    windows = np.stack([audio[s:s + WINDOW_48K] for s in starts])
    n = windows.shape[0]
    front_end = YamnetFrontEnd(num_threads=1)
    classes = ("birds", "insects", "frog", "rain", "thunder", "wind", "water", "vehicle",
               "speech")
    indices = mapping_indices(classes, front_end.labels)
    rng = np.random.default_rng(0)
    head = HeadWeights(np.zeros(1030, np.float32), np.ones(1030, np.float32),
                       rng.standard_normal((1030, 9)).astype(np.float32),
                       np.eye(9, dtype=np.float32), np.zeros(9, np.float32))
    frames = np.stack([to_16k(w, 48_000) for w in windows])
    out = front_end(frames)
    features = np.concatenate([out.embeddings, highband(windows)], axis=1)
    mapped = mapped_scores(out.scores, indices)
    stages: list[tuple[str, Callable[[], object]]] = [
        ("resample 48>16 kHz", lambda: [to_16k(w, 48_000) for w in windows]),
        ("YAMNet, 1 thread", lambda: front_end(frames)),
        ("high band + fold", lambda: (highband(windows), mapped_scores(out.scores, indices))),
        ("head (numpy)", lambda: head.scores(features, mapped)),
    ]
    rows = []
    with threadpool_limits(1):
        for stage, fn in stages:
            cpu, wall = timed(fn, repeats)
            per = cpu / n * 1e3
            rows.append(Row(stage, n, round(per, 4), round(per * windows_per_s, 3),
                            round(wall / n * 1e3, 4)))
    return rows, windows_per_s


def table(rows: list[Row]) -> str:
    lines = [f"{'stage':<18} {'batch':>5} {'ms CPU/window':>14} {'ms CPU/audio s':>15} "
             f"{'ms wall/window':>15}"]
    lines += [f"{r.stage:<18} {r.batch:>5} {r.ms_cpu_per_window:>14.4f} "
              f"{r.ms_cpu_per_audio_s:>15.3f} {r.ms_wall_per_window:>15.4f}" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", type=Path, default=DEFAULT_SELECTOR)
    p.add_argument("--cache", type=Path, default=None, help="corpus cache (default: Tidzam's)")
    p.add_argument("--seconds", type=float, default=300.0, help="audio seconds per pass")
    p.add_argument("--overlap", type=float, default=LIVE_OVERLAP)
    p.add_argument("--batches", default="1,32,128")
    p.add_argument("--threads", type=int, default=1, help="LiteRT threads")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--json", action="store_true")
    p.add_argument("--yamnet", action="store_true",
                   help="the YAMNet-based selector's stages instead")
    args = p.parse_args(argv)
    folder = ModelFolder.load(args.folder)
    if args.yamnet:
        audio, source = held_out_audio(folder, args.cache or default_cache_dir(),
                                       args.seconds)
        rows, per_s = measure_yamnet(audio, args.overlap, max(3, args.repeats // 5))
        total = sum(r.ms_cpu_per_audio_s for r in rows)
        if args.json:
            print(json.dumps({"audio": source, "audio_s": args.seconds,
                              "windows_per_audio_s": round(per_s, 4),
                              "ms_cpu_per_audio_s": round(total, 3),
                              "rows": [asdict(r) for r in rows]}))
            return 0
        print(f"YAMNet-based selector; audio: {source}, {args.seconds:g} s; 0.975 s windows, "
              f"{per_s:.3f} per audio second (overlap {args.overlap})")
        print(table(rows))
        print(f"total: {total:.2f} ms CPU per audio second on one core "
              f"({1000 / total:.0f}x real time per channel)")
        return 0
    params = folder.params
    audio, source = held_out_audio(folder, args.cache or default_cache_dir(), args.seconds)
    hop = max(1, round(params.window_samples * (1.0 - args.overlap)))
    windows_per_s = params.sample_rate / hop
    windows = frame_windows(audio, params, hop)
    features = window_features(windows, params)
    batches = [int(b) for b in args.batches.split(",") if b]
    if windows.shape[0] < max([LIVE_BATCH, *batches]):
        raise SystemExit(f"{args.seconds:g} s of audio make {windows.shape[0]} windows, fewer "
                         f"than the largest batch {max([LIVE_BATCH, *batches])}: raise --seconds")
    starts = np.arange(windows.shape[0], dtype=np.int64) * hop
    rows = measure(folder, pcm.to_int16(audio), starts, features, windows_per_s, batches,
                   args.threads, args.repeats)
    head = {"model": f"{folder.meta.model_id} {folder.meta.version}",
            "folder": str(args.folder), "audio": source, "audio_s": args.seconds,
            "windows": int(windows.shape[0]), "hop_s": hop / params.sample_rate,
            "windows_per_audio_s": round(windows_per_s, 4)}
    if args.json:
        print(json.dumps({**head, "rows": [asdict(r) for r in rows]}))
        return 0
    print(f"{head['model']} ({args.folder}); audio: {source}, {args.seconds:g} s")
    print(f"{windows.shape[0]} windows of {params.window_s} s every {hop / params.sample_rate} s "
          f"(overlap {args.overlap}): {windows_per_s:.3f} windows per audio second")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
