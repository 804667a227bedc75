"""The backbone registry: a name maps to a builder, its preprocessing mode, a default image size and notes.

Importing this module does not import TensorFlow; builders import Keras when they run. Adding a backbone is one
`register(...)` line (see docs/extending.md).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from benchmark.errors import UserError


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable  # (input_shape, weights) -> keras.Model without its classifier, output (B, h, w, C)
    preprocess: str  # a models.layers.GrayToBackbone mode
    params: int  # parameters without the head (checked against the built network by the tests)
    default_size: int = 224
    min_size: int = 32
    imagenet_file: str | None = None  # the no-top weights file Keras downloads (keras.applications)
    timm: str | None = None  # timm's ImageNet checkpoint, loaded through keras-hub (models/pretrained.py)
    notes: str = ""
    residual_bn: str | None = None  # names of each residual block's last BatchNorm, zero-initialised from scratch


REGISTRY: dict[str, BackboneSpec] = {}


def register(name: str, build: Callable, preprocess: str, params: int, **options) -> None:
    """Add a backbone: `register("name", builder, "torch", params=..., imagenet_file=..., notes=...)`."""
    REGISTRY[name] = BackboneSpec(name, build, preprocess, params, **options)


def keras_app(attr: str, **kwargs) -> Callable:
    """A builder for a keras.applications network without its top."""
    def build(input_shape, weights):
        import keras

        return getattr(keras.applications, attr)(include_top=False, weights=weights, input_shape=input_shape, **kwargs)
    return build


def _resnet34(input_shape, weights):
    from models.resnet34 import ResNet34

    return ResNet34(input_shape=input_shape, weights=weights)


register("resnet34", _resnet34, "torch", params=21_301_696, residual_bn=r"_block\d+_2_bn$", timm="resnet34.a1_in1k",
         notes="basic blocks (3,4,6,3), written here (Keras has none); ImageNet weights: timm's, via keras-hub")
register("resnet50", keras_app("ResNet50"), "caffe", params=23_587_712, residual_bn=r"_block\d+_3_bn$",
         imagenet_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
register("resnet101", keras_app("ResNet101"), "caffe", params=42_658_176, residual_bn=r"_block\d+_3_bn$",
         imagenet_file="resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5")
register("densenet121", keras_app("DenseNet121"), "torch", params=7_037_504,
         imagenet_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", notes="the CheXNet backbone")
register("mobilenet", keras_app("MobileNet"), "tf", params=3_228_864, imagenet_file="mobilenet_1_0_224_tf_no_top.h5",
         notes="MobileNet v1, alpha 1.0")
register("mobilenetv2", keras_app("MobileNetV2"), "tf", params=2_257_984,
         imagenet_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
register("efficientnetb0", keras_app("EfficientNetB0"), "none", params=4_049_571,
         imagenet_file="efficientnetb0_notop.h5", notes="normalises inside the network")
register("densenet169", keras_app("DenseNet169"), "torch", params=12_642_880,
         imagenet_file="densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5")
register("convnext_tiny", keras_app("ConvNeXtTiny"), "none", params=27_820_128, imagenet_file="convnext_tiny_notop.h5",
         notes="normalises inside the network; LayerNorm, no BatchNorm")


def get_spec(name: str) -> BackboneSpec:
    if name not in REGISTRY:
        raise UserError(f"unknown backbone {name!r}; valid: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def has_imagenet(name: str) -> bool:
    spec = get_spec(name)
    return spec.imagenet_file is not None or spec.timm is not None


def build_backbone(name: str, image_size: int, weights, local_weights: str | None = None):
    """Build a registered backbone for (image_size, image_size, 3) inputs.

    `weights` is None (random), "imagenet" (Keras's file, or timm's checkpoint through keras-hub; looked for in
    `local_weights` / $CXR_BENCH_WEIGHTS before any download: see models/pretrained.py), a weights file, or a
    timm checkpoint folder."""
    from models.pretrained import copy_from_hub, is_timm_folder, load_keras_hub_resnet, timm_source, weights_dir

    spec = get_spec(name)
    if image_size < spec.min_size:
        raise UserError(f"image_size {image_size} is too small for {name}; use at least {spec.min_size} px")
    shape = (image_size, image_size, 3)
    if weights in (None, "none", "null"):
        return spec.build(shape, None)
    local = weights_dir(local_weights)
    if weights == "imagenet":
        if spec.timm is not None:
            model = spec.build(shape, None)
            copy_from_hub(model, load_keras_hub_resnet(timm_source(spec.timm, local)))
            return model
        if spec.imagenet_file is None:
            raise UserError(f"{name} has no ImageNet weights; use weights: null or a weights file, or a mapping "
                            f"such as {{default: imagenet, {name}: null}}")
        if local is not None and (local / spec.imagenet_file).is_file():
            weights = str(local / spec.imagenet_file)  # a local copy: no download
        else:
            try:
                return spec.build(shape, "imagenet")
            except Exception as exc:  # Keras raises a bare Exception for a failed download
                text = str(exc)
                if "fetch failure" not in text and "URL" not in text and "resolve" not in text.lower():
                    raise
                url = re.search(r"https?://\S+", text)
                file = os.path.basename(url.group(0).rstrip(":")) if url else spec.imagenet_file
                raise UserError(f"cannot download the ImageNet weights of {name} (offline?); place {file} in "
                                f"{Path.home() / '.keras' / 'models'} or in a folder named by weights_dir (or "
                                f"$CXR_BENCH_WEIGHTS) and run again, or use weights: null") from None
    path = Path(str(weights))
    if is_timm_folder(path):
        if spec.timm is None:
            raise UserError(f"{path} is a timm checkpoint; cxr-bench reads timm checkpoints for "
                            f"{', '.join(n for n, s in REGISTRY.items() if s.timm)}, not {name}")
        model = spec.build(shape, None)
        copy_from_hub(model, load_keras_hub_resnet(str(path)))
        return model
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist; use weights: imagenet, null or an existing file")
    model = spec.build(shape, None)
    try:
        model.load_weights(str(path))
    except Exception as exc:  # Keras raises ValueError or KeyError for a mismatch
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(f"weights file {path} does not match backbone {name} at {image_size} px: {first}") from None
    return model


def describe_all() -> list[dict]:
    """Name, parameter count (without the head, from the registry: nothing is built), default size and notes."""
    return [{"name": name, "params": spec.params, "default_size": spec.default_size, "preprocess": spec.preprocess,
             "imagenet": "keras" if spec.imagenet_file else "timm" if spec.timm else None, "notes": spec.notes}
            for name, spec in REGISTRY.items()]
