"""TEMPLATE: a backbone (copy this file, then edit the TODOs). docs/extending.md, "A backbone".

A backbone is a builder `(input_shape, weights) -> keras.Model` without a classifier, output (batch, h, w, channels),
and one `register(...)` call in models/registry.py. `models.classifier.build_classifier` puts the uint8 grayscale
input, the augmentation and the preprocessing in front of it and the head behind it; the training, evaluation,
Grad-CAM, export and report need nothing else. tests/test_templates.py runs this very file through the backbone
contract (tests/backbone_contract.py): the registered parameter count, float32 probabilities under mixed_bfloat16,
and a `.keras` save that reloads to the same outputs.

A keras.applications network needs no builder of its own, only the registration line:

    register("efficientnetb3", keras_app("EfficientNetB3"), "none", params=10_783_535,
             imagenet_file="efficientnetb3_notop.h5", default_size=300)

Plugging it in:
- Python API, this process only: importing this module registers the backbone; `Config(backbone=NAME)`,
  `benchmark.train.training.train_run` and `python -m benchmark models` run in this process then see it.
- The command line: a sweep trains each model in a fresh `python -m benchmark train` process, so the registration
  must be in models/registry.py. Copy this file to `models/<name>.py`, and add to models/registry.py, after its last
  `register(...)` line (convnext_tiny), a lazy builder and the call, as ResNet34 is declared there:

      def _small_cnn(input_shape, weights):
          from models.small_cnn import small_cnn

          return small_cnn(input_shape, weights)

      register("small_cnn", _small_cnn, "torch", params=..., residual_bn=r"_block_2_bn$", min_size=32)

  (registry.py imports no Keras at import time: `--help` and `python -m benchmark models` stay fast.)
"""

from __future__ import annotations

from models.registry import register

NAME = "small_cnn"  # TODO: the name --backbone / `backbones:` use
WIDTHS = (16, 32, 64, 128)  # TODO: your network; each stage halves the resolution
# TODO: the built backbone's count_params() (BatchNorm statistics included); the contract test shows the right
# number when this one is wrong, and `python -m benchmark models` lists it without building anything
PARAMS = 491_760


def _stage(x, filters: int, name: str):
    from keras import layers

    # keras.layers and keras.ops only, never tf.*: the same network then runs on the JAX and PyTorch engines.
    # Built-in layers only, too: a layer class of your own needs @keras.saving.register_keras_serializable()
    # for model.keras to reload.
    x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"{name}_down_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_down_bn")(x)
    x = layers.Activation("relu", name=f"{name}_down_relu")(x)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_block_1_conv")(x)
    y = layers.BatchNormalization(name=f"{name}_block_1_bn")(y)
    y = layers.Activation("relu", name=f"{name}_block_1_relu")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_block_2_conv")(y)
    # the residual branch's last BatchNorm: `residual_bn` below names it, so that from scratch it starts at zero
    # (each block starts as the identity; models/classifier.py, zero_init_residuals)
    y = layers.BatchNormalization(name=f"{name}_block_2_bn")(y)
    return layers.Activation("relu", name=f"{name}_out")(layers.Add(name=f"{name}_add")([x, y]))


def small_cnn(input_shape, weights=None):
    """The builder. `weights` is None here: models.registry.build_backbone loads a weights file itself after
    building, and `weights: imagenet` needs `imagenet_file` (keras.applications) or `timm` in the registration."""
    import keras  # inside the builder: importing this module (and the registry) must not start an engine

    inputs = keras.Input(shape=input_shape, name="input")  # three channels, already preprocessed
    x = inputs
    for i, filters in enumerate(WIDTHS, start=1):
        x = _stage(x, filters, name=f"stage{i}")
    model = keras.Model(inputs, x, name=NAME)  # no pooling, no head: the classifier adds them
    if weights is not None:
        model.load_weights(weights)
    return model


# "torch": the input is normalised with ImageNet's mean and standard deviation (models/layers.py). For a network
# trained from scratch any mode works; for pretrained weights use the one they were trained with (caffe, tf,
# torch, or none when the network normalises inside).
# min_size: the smallest image_size it accepts (4 stride-2 stages: 32 px leaves 2 x 2); a smaller one is refused
# with one line before training. Without imagenet_file or timm, `weights: imagenet` (the default) is refused
# before any run starts: profiles train it with `weights: null`. default_size: what `python -m benchmark models`
# shows as its usual input.
register(NAME, small_cnn, "torch", params=PARAMS, residual_bn=r"_block_2_bn$", min_size=32, default_size=224,
         notes="TODO: one line for `python -m benchmark models`: where the network comes from")
