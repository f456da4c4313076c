"""From a trained Keras model to the TFLite file of a model folder, and that file's
held-out metrics and speed as the classifier runs it (LiteRT).

TensorFlow is imported inside the functions that need it.
"""

from __future__ import annotations

import importlib.metadata
import platform
import tempfile
import time
from typing import Any

import numpy as np

from inference.features import FeatureParams
from inference.modelfolder import Metrics, ModelFolder
from learning.datasets.format import TEST, CompiledDataset
from learning.training.metrics import held_out_metrics


def export_tflite(model: Any, params: FeatureParams) -> bytes:
    """Float32 TFLite of ``model`` with a dynamic batch: input (None, frames, mels).

    Through a SavedModel: converting a traced function of a Keras 3 model directly
    leaves its weights as uninitialised resource variables (NaN scores).
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="tidzam-export-") as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        tflite: bytes = tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
    _check_dynamic_batch(tflite, params)
    return tflite


def _check_dynamic_batch(tflite: bytes, params: FeatureParams) -> None:
    from ai_edge_litert.interpreter import Interpreter

    signature = list(Interpreter(model_content=tflite).get_input_details()[0]["shape_signature"])
    if signature != [-1, *params.shape]:
        raise RuntimeError(f"exported input shape {signature}, expected [-1, *{params.shape}]")


def framework_versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__,
            "ai_edge_litert": importlib.metadata.version("ai-edge-litert"),
            "numpy": np.__version__, "python": platform.python_version()}


def evaluate_folder(folder: ModelFolder, ds: CompiledDataset, threads: int = 1
                    ) -> tuple[Metrics, float]:
    """Held-out metrics of the exported TFLite file (LiteRT, as the classifier runs it;
    ``decided_fraction``: windows the decision rule does not call ``unknown``) and the
    inference time in ms per window (batches of 128, one thread)."""
    from inference.scoring import TfliteModel, decide

    model = TfliteModel(folder, num_threads=threads)
    x, y = ds.side(TEST)
    scores = np.concatenate([model.predict(x[i:i + 128]) for i in range(0, len(x), 128)]) \
        if len(x) else np.zeros((0, len(ds.label_names)), np.float32)
    metrics = held_out_metrics(scores, y, ds.label_names, ds.class_split)
    d = folder.meta.decision
    decided = [decide(s, ds.label_names, d.threshold, d.margin) != ("unknown",) for s in scores]
    held_out = metrics.held_out.model_copy(
        update={"decided_fraction": round(float(np.mean(decided)), 4) if decided else None})
    metrics = metrics.model_copy(update={"held_out": held_out})
    bench = TfliteModel(folder, num_threads=1)
    batch = np.resize(x, (128, *ds.params.shape)) if len(x) else \
        np.zeros((128, *ds.params.shape), np.float32)
    bench.predict(batch)
    start = time.perf_counter()
    for _ in range(10):
        bench.predict(batch)
    ms = (time.perf_counter() - start) / 10 / 128 * 1e3
    return metrics, ms
