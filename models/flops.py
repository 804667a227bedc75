"""Forward-pass FLOPs of a Keras model per image, counted from its layers (2 x multiply-accumulates of the
convolution and dense layers, which dominate every backbone here)."""

from __future__ import annotations

import math

from keras import layers


def _prod(values) -> int:
    return int(math.prod(int(v) for v in values))


def count_flops(model) -> int:
    total = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)):
            try:
                out_shape = layer.output.shape
                in_shape = layer.input.shape
            except (AttributeError, ValueError):
                continue
            if isinstance(layer, layers.DepthwiseConv2D):
                kh, kw = layer.kernel_size
                total += 2 * _prod(out_shape[1:]) * kh * kw
            elif isinstance(layer, layers.Conv2D):
                kh, kw = layer.kernel_size
                total += 2 * _prod(out_shape[1:]) * kh * kw * int(in_shape[-1]) // layer.groups
            else:
                total += 2 * int(in_shape[-1]) * int(out_shape[-1])
    return total
