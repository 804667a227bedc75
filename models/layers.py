"""Layers that make a model take the pipeline's uint8 grayscale batches directly: three channels and the
backbone's own preprocessing (the keras.applications modes), so a saved model needs no outside preprocessing."""

from __future__ import annotations

import keras
from keras import ops

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="cxr_bench")
class GrayToBackbone(keras.layers.Layer):
    """float [0, 255] grayscale (B, H, W, 1) -> (B, H, W, 3) in the backbone's expected range.

    Modes as in keras.applications.imagenet_utils: 'caffe' (BGR, mean-subtracted: ResNet50/101),
    'tf' ([-1, 1]: MobileNet, MobileNetV2), 'torch' ([0, 1], ImageNet mean/std: DenseNet, ResNet34), and
    'none' (0..255, for backbones that normalise inside: EfficientNet, ConvNeXt).
    """

    def __init__(self, mode: str = "torch", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("caffe", "tf", "torch", "none"):
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, "float32")
        x = ops.concatenate([x, x, x], axis=-1)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            return (x / 255.0 - ops.array(IMAGENET_MEAN)) / ops.array(IMAGENET_STD)
        if self.mode == "caffe":
            return x - ops.array(CAFFE_MEAN_BGR)  # gray: the BGR order does not change the values
        return x

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
