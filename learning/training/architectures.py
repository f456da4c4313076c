"""Keras architectures (TensorFlow: imported by training only, never live).

``build_selector``: a small CNN over one log-mel window, float32 input
(N, frames, mels) = (N, 45, 64) → softmax (N, n_classes). A strided first
convolution and depthwise-separable blocks keep it small: 2.6 M multiply-adds per
window and 23 k parameters at width 24, 4.3 M and 39 k at width 32 (the default
selector's; ≈ 0.05 ms per window in batches of 32 on one CPU core with
LiteRT/XNNPACK, see ``benchmarks/inference_cost.py``). The input is normalised
inside the model with the training set's mean and standard deviation, so callers
feed raw log-mel values.
Global average AND max pooling: short events (a thunder crack, a chirp) should
not be averaged away by a long background.
"""

from __future__ import annotations

from typing import Any

import keras

from inference.features import FeatureParams


def _conv_bn(layers: Any, x: Any, filters: int, strides: int = 1) -> Any:
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def _separable_bn(layers: Any, x: Any, filters: int) -> Any:
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(filters, 1, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def build_selector(n_classes: int, params: FeatureParams, mean: float, std: float,
                   width: int = 24, dropout: float = 0.3, k: Any = keras,
                   activation: str = "softmax") -> Any:
    """The selector CNN: (N, frames, mels) float32 log-mel → (N, n_classes) softmax
    (or one sigmoid per class: ``activation="sigmoid"``, the distilled selector's).

    ``k`` is the Keras to build with: Keras 3 (default, what is exported), or
    ``tf_keras`` (Keras 2) for distributed training: the same layers in the same
    order, so the weights of one load into the other (``get_weights``/``set_weights``).
    """
    if n_classes < 1:
        raise ValueError("a classifier needs at least one class")
    layers = k.layers
    frames, mels = params.shape  # a log-mel window
    inputs = k.Input(shape=(frames, mels), name="logmel", dtype="float32")
    x = layers.Reshape((frames, mels, 1))(inputs)
    x = layers.Rescaling(1.0 / std, offset=-mean / std)(x)
    x = _conv_bn(layers, x, width, strides=2)
    x = layers.MaxPooling2D(2)(_separable_bn(layers, x, 2 * width))
    x = layers.MaxPooling2D(2)(_separable_bn(layers, x, 4 * width))
    x = _separable_bn(layers, x, 5 * width)
    pooled = layers.Concatenate(name="embedding")([layers.GlobalAveragePooling2D()(x),
                                   layers.GlobalMaxPooling2D()(x)])
    pooled = layers.Dropout(dropout)(pooled)
    outputs = layers.Dense(n_classes, activation=activation, name="scores")(pooled)
    return k.Model(inputs, outputs, name="selector")
