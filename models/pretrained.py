"""Pretrained weights for the backbones: Keras's ImageNet files (keras.applications) and timm's published
checkpoints read by keras-hub (ResNet34, which keras.applications lacks), from a local folder before any download.

- `weights: imagenet` for a keras.applications backbone loads its no-top file: from `weights_dir` (the setting, or
  $CXR_BENCH_WEIGHTS) if the file is there, else Keras downloads it into ~/.keras/models.
- `weights: imagenet` for ResNet34 loads timm's `resnet34.a1_in1k` (ImageNet-1k, 76.4 % top-1 in timm's results)
  through keras-hub (`pip install -e .[hub]`): from `weights_dir/timm/resnet34.a1_in1k/` if it is there, else from
  the Hugging Face hub (`hf://timm/resnet34.a1_in1k`). keras-hub converts the PyTorch checkpoint (its own converter,
  keras_hub/src/utils/timm/convert_resnet.py); the weights are then copied layer by layer into models/resnet34.py,
  which pads like PyTorch so that both compute the same outputs.
- A path names a weights file (`.weights.h5` or Keras's legacy `.h5`) or a timm checkpoint folder (`config.json` and
  `model.safetensors`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from benchmark.errors import UserError

HUB_HINT = "pip install -e .[hub]   (keras-hub, safetensors and huggingface_hub)"


def weights_dir(setting: str | None = None) -> Path | None:
    value = setting or os.environ.get("CXR_BENCH_WEIGHTS")
    return Path(value) if value else None


def is_timm_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def timm_source(checkpoint: str, local: Path | None) -> str:
    """A local timm folder for `checkpoint` under weights_dir/timm/, else its Hugging Face handle."""
    if local is not None and is_timm_folder(local / "timm" / checkpoint):
        return str(local / "timm" / checkpoint)
    return f"hf://timm/{checkpoint}"


def load_keras_hub_resnet(source: str):
    """keras-hub's ResNetBackbone from a timm checkpoint (a folder or an hf:// handle)."""
    try:
        import keras_hub
    except ImportError:
        raise UserError(f"ResNet34's ImageNet weights come from timm through keras-hub, which is not installed: "
                        f"{HUB_HINT}") from None
    try:
        return keras_hub.models.ResNetBackbone.from_preset(source)
    except ImportError as exc:
        raise UserError(f"loading {source} needs {exc.name or 'a package'}: {HUB_HINT}") from None
    except Exception as exc:
        if source.startswith("hf://"):
            name = source[len("hf://"):]
            raise UserError(
                f"cannot download {source} ({type(exc).__name__}; offline?): put its config.json and "
                f"model.safetensors (from https://huggingface.co/{name}) in a folder and set weights_dir to the folder "
                f"holding timm/{name.split('/')[-1]}/, or weights: {{resnet34: /path/to/that/folder}}") from None
        raise UserError(f"{source} is not a timm checkpoint keras-hub can read ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:150] if str(exc) else ''})") from None


def hub_layer_name(ours: str) -> str | None:
    """models/resnet34.py's layer name -> keras-hub ResNetBackbone's: conv{2..5}_block{1..} -> stack{0..3}_block{0..}."""
    if ours in ("conv1_conv", "conv1_bn"):
        return ours
    m = re.fullmatch(r"conv(\d)_block(\d+)_(\d)_(conv|bn)", ours)
    if not m:
        return None
    stage, block, index, kind = m.groups()
    return f"stack{int(stage) - 2}_block{int(block) - 1}_{index}_{kind}"


def copy_from_hub(model, hub) -> int:
    """Copy every convolution's and BatchNorm's weights of keras-hub's ResNet into ours; returns the layers set."""
    copied = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        name = hub_layer_name(layer.name)
        try:
            source = hub.get_layer(name) if name else None
        except ValueError:
            source = None
        if source is None:
            raise UserError(f"the timm checkpoint has no layer for {layer.name} of {model.name}; is it a ResNet34?")
        values = source.get_weights()
        if [v.shape for v in values] != [tuple(w.shape) for w in layer.weights]:
            raise UserError(f"the timm checkpoint's {name} has shapes {[v.shape for v in values]}, {layer.name} needs "
                            f"{[tuple(w.shape) for w in layer.weights]}; is it a ResNet34?")
        layer.set_weights(values)
        copied += 1
    return copied
