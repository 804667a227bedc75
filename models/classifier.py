"""The classifier: uint8 grayscale image -> augmentation (training only) -> backbone preprocessing -> backbone ->
head -> one sigmoid per label. The backbone and head are nested models named "backbone" and "head", so Grad-CAM
and fine-tuning modes can reach them."""

from __future__ import annotations

import re
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

from models.layers import GrayToBackbone
from models.registry import build_backbone, get_spec


def build_head(feature_shape, n_labels: int, dropout: float = 0.2, hidden: int = 0, per_label: bool = False,
               label_names=None) -> keras.Model:
    """Global average pooling -> dropout -> [hidden Dense] -> sigmoid Dense (float32, also under mixed precision).
    With `per_label`, one small Dense per label, concatenated."""
    inp = keras.Input(shape=feature_shape, name="features")
    x = layers.GlobalAveragePooling2D(name="pool")(inp)
    if hidden:
        x = layers.Dense(hidden, activation="relu", name="hidden")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    if per_label:
        outs = [layers.Dense(1, activation="sigmoid", dtype="float32", name=f"label_{i}")(x) for i in range(n_labels)]
        out = layers.Concatenate(dtype="float32", name="probabilities")(outs)
    else:
        out = layers.Dense(n_labels, activation="sigmoid", dtype="float32", name="probabilities")(x)
    return keras.Model(inp, out, name="head")


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation: rotation in degrees, shift/zoom as fractions, brightness/contrast changes."""

    rotation: float = 0.0
    shift: float = 0.0
    zoom: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    hflip: bool = False
    seed: int = 0


def build_augment(aug: Augment) -> keras.Sequential:
    """Small rotation, shift, zoom, brightness and contrast changes; active only while training."""
    seed = int(aug.seed)
    steps = []
    if aug.rotation:
        steps.append(layers.RandomRotation(aug.rotation / 360.0, fill_mode="constant", seed=seed))
    if aug.shift:
        steps.append(layers.RandomTranslation(aug.shift, aug.shift, fill_mode="constant", seed=seed + 1))
    if aug.zoom:
        steps.append(layers.RandomZoom(aug.zoom, fill_mode="constant", seed=seed + 2))
    if aug.brightness:
        steps.append(layers.RandomBrightness(aug.brightness, value_range=(0, 255), seed=seed + 3))
    if aug.contrast:
        steps.append(layers.RandomContrast(aug.contrast, seed=seed + 4))
    if aug.hflip:
        steps.append(layers.RandomFlip("horizontal", seed=seed + 5))
    return keras.Sequential(steps, name="augment")


def set_bn_momentum(model: keras.Model, momentum: float) -> int:
    """Set the moving-statistics momentum of every BatchNormalization layer; returns how many were changed."""
    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = momentum
            count += 1
    return count


def zero_init_residuals(backbone: keras.Model, pattern: str) -> int:
    """Zero the scale (gamma) of each residual block's last BatchNorm, so every block starts as the identity:
    deep ResNets then train from scratch (Goyal et al. 2017). Returns how many layers were changed."""
    count = 0
    for layer in backbone._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, layers.BatchNormalization) and re.search(pattern, layer.name):
            layer.gamma.assign(np.zeros(layer.gamma.shape, dtype="float32"))
            count += 1
    return count


def build_classifier(backbone: str, image_size: int, n_labels: int, weights=None, weights_dir: str | None = None,
                     bn_momentum: float | None = None, dropout: float = 0.2, head_hidden: int = 0,
                     per_label_heads: bool = False, augment: Augment | None = None) -> keras.Model:
    """The whole network: `backbone` at `image_size` starting from `weights` (None: random), uint8 grayscale in,
    one probability per label out. `bn_momentum` None: 0.9 from scratch, else the backbone's own."""
    spec = get_spec(backbone)
    size = image_size
    net = build_backbone(backbone, size, weights, weights_dir)
    net.name = "backbone"
    momentum = bn_momentum if bn_momentum is not None else (0.9 if weights is None else None)
    if momentum is not None:
        set_bn_momentum(net, momentum)
    if weights is None and spec.residual_bn:
        zero_init_residuals(net, spec.residual_bn)
    head = build_head(net.output.shape[1:], n_labels, dropout, head_hidden, per_label_heads)
    inp = keras.Input(shape=(size, size, 1), dtype="uint8", name="image")
    x = layers.Rescaling(1.0, dtype="float32", name="to_float")(inp)
    if augment is not None:
        x = build_augment(augment)(x)
    x = GrayToBackbone(spec.preprocess, name="preprocess")(x)
    x = net(x)
    out = head(x)
    return keras.Model(inp, out, name=f"cxr_{backbone}")
