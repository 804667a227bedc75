"""ResNet34 in Keras 3 (He et al. 2016): basic blocks (two 3x3 convolutions), stages (3, 4, 6, 3), the standard
stem. keras.applications has ResNet50/101/152 (bottleneck blocks) but no ResNet34.

It pads like torchvision's and timm's ResNets (explicit symmetric zero padding before every strided convolution;
BatchNorm epsilon 1e-5), so that timm's ImageNet weights (models/pretrained.py) give the outputs they give there.
"""

from __future__ import annotations

import keras
from keras import layers

VARIANTS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
WIDTHS = (64, 128, 256, 512)
BN_EPS = 1e-5  # PyTorch's


def _basic_block(x, filters: int, stride: int, name: str):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_0_conv")(x)
        shortcut = layers.BatchNormalization(epsilon=BN_EPS, name=f"{name}_0_bn")(shortcut)
    if stride > 1:  # symmetric, as PyTorch pads: "same" pads a strided convolution on one side only
        y = layers.ZeroPadding2D(1, name=f"{name}_1_pad")(x)
        y = layers.Conv2D(filters, 3, strides=stride, padding="valid", use_bias=False, name=f"{name}_1_conv")(y)
    else:
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_1_conv")(x)
    y = layers.BatchNormalization(epsilon=BN_EPS, name=f"{name}_1_bn")(y)
    y = layers.Activation("relu", name=f"{name}_1_relu")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    y = layers.BatchNormalization(epsilon=BN_EPS, name=f"{name}_2_bn")(y)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def ResNetBasic(blocks=(3, 4, 6, 3), input_shape=(224, 224, 3), weights=None, name="resnet34") -> keras.Model:
    """A basic-block ResNet without its classifier (include_top=False); `weights` is None or a weights file."""
    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPS, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (count, filters) in enumerate(zip(blocks, WIDTHS), start=2):
        for i in range(count):
            stride = 2 if (i == 0 and stage > 2) else 1
            x = _basic_block(x, filters, stride, name=f"conv{stage}_block{i + 1}")
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model


def ResNet34(input_shape=(224, 224, 3), weights=None) -> keras.Model:
    return ResNetBasic(VARIANTS["resnet34"], input_shape, weights, name="resnet34")
