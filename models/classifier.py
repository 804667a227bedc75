"""The classifier: uint8 grayscale image -> augmentation (training only) -> backbone preprocessing -> backbone ->
head -> one sigmoid per label. The backbone and head are nested models named "backbone" and "head", so Grad-CAM
and fine-tuning modes can reach them."""

from __future__ import annotations

import re

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


def build_augment(cfg) -> keras.Sequential:
    """Small rotation, shift, zoom, brightness and contrast changes; active only while training."""
    seed = int(cfg.seed)
    steps = []
    if cfg.rotation:
        steps.append(layers.RandomRotation(cfg.rotation / 360.0, fill_mode="constant", seed=seed))
    if cfg.shift:
        steps.append(layers.RandomTranslation(cfg.shift, cfg.shift, fill_mode="constant", seed=seed + 1))
    if cfg.zoom:
        steps.append(layers.RandomZoom(cfg.zoom, fill_mode="constant", seed=seed + 2))
    if cfg.brightness:
        steps.append(layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed + 3))
    if cfg.contrast:
        steps.append(layers.RandomContrast(cfg.contrast, seed=seed + 4))
    if cfg.hflip:
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


def build_classifier(cfg, n_labels: int) -> keras.Model:
    """The whole network for a Config: backbone `cfg.backbone` at `cfg.image_size` with `cfg.weights`."""
    from benchmark.config import weights_for

    spec = get_spec(cfg.backbone)
    size = cfg.image_size
    weights = weights_for(cfg)
    backbone = build_backbone(cfg.backbone, size, weights, cfg.weights_dir)
    backbone.name = "backbone"
    momentum = cfg.bn_momentum if cfg.bn_momentum is not None else (0.9 if weights is None else None)
    if momentum is not None:
        set_bn_momentum(backbone, momentum)
    if weights is None and spec.residual_bn:
        zero_init_residuals(backbone, spec.residual_bn)
    head = build_head(backbone.output.shape[1:], n_labels, cfg.dropout, cfg.head_hidden, cfg.per_label_heads)
    inp = keras.Input(shape=(size, size, 1), dtype="uint8", name="image")
    x = layers.Rescaling(1.0, dtype="float32", name="to_float")(inp)
    if cfg.augment:
        x = build_augment(cfg)(x)
    x = GrayToBackbone(spec.preprocess, name="preprocess")(x)
    x = backbone(x)
    out = head(x)
    return keras.Model(inp, out, name=f"cxr_{cfg.backbone}")
