"""`perf train --reference torch`: training images/s of a plain PyTorch network of the same architecture as one of
ours (torchvision's ResNet34/50/101, DenseNet121, MobileNetV2; timm's MobileNet v1 where timm is installed), fed the
same uint8 batches, at the same batch size, image size and precision, channels-last, with the same loss (binary
cross-entropy on the labels) and optimiser (Adam). Measured in the same process as ours, so that the ratio holds on
any machine."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import time
import types

import numpy as np

from benchmark.errors import UserError

TORCHVISION = {"resnet34": "resnet.resnet34", "resnet50": "resnet.resnet50", "resnet101": "resnet.resnet101",
               "densenet121": "densenet.densenet121", "mobilenetv2": "mobilenetv2.mobilenet_v2"}
TIMM = {"mobilenet": "mobilenetv1_100"}
INSTALL_HINT = "pip install -e .[torch]"


def reference_builder(backbone: str):
    """(a function num_classes -> torch network, its source) for our backbone; None where no reference exists."""
    if backbone in TORCHVISION:
        module, fn = TORCHVISION[backbone].rsplit(".", 1)
        models, note = _torchvision_models(module)
        import torchvision  # noqa: F401  (its version, below)

        version = importlib.metadata.version("torchvision")
        return (lambda n: getattr(models, fn)(weights=None, num_classes=n)), f"torchvision {version} {fn}{note}"
    if backbone in TIMM and importlib.util.find_spec("timm") is not None:
        import timm

        return (lambda n: timm.create_model(TIMM[backbone], pretrained=False, num_classes=n)), \
            f"timm {timm.__version__} {TIMM[backbone]}"
    return None


def _torchvision_models(module: str):
    """torchvision's model module. Where torchvision's compiled operators do not match the installed PyTorch (a
    CUDA torchvision beside a CPU-only PyTorch build), its pure-Python model definitions are loaded without them."""
    try:
        return importlib.import_module(f"torchvision.models.{module}"), ""
    except ImportError:
        if importlib.util.find_spec("torchvision") is None:
            raise UserError(f"--reference torch needs torchvision, which is not installed: {INSTALL_HINT}") from None
        raise
    except RuntimeError:  # "operator torchvision::nms does not exist": the compiled extension did not load
        for name in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[name]
        root = importlib.util.find_spec("torchvision").submodule_search_locations[0]
        for name, sub in (("torchvision", ""), ("torchvision.models", "/models")):
            pkg = types.ModuleType(name)
            pkg.__path__ = [root + sub]
            sys.modules[name] = pkg
        return (importlib.import_module(f"torchvision.models.{module}"),
                " (its model code; its compiled operators do not match this PyTorch)")


def check_available() -> None:
    """A UserError with the install hint where PyTorch or torchvision is missing."""
    for name in ("torch", "torchvision"):
        if importlib.util.find_spec(name) is None:
            what = "PyTorch" if name == "torch" else "torchvision"
            raise UserError(f"--reference torch needs {what}, which is not installed: {INSTALL_HINT}")


def reference_rate(backbone: str, batch: np.ndarray, targets: np.ndarray, precision: str, steps: int) -> dict:
    """Training images/s of the PyTorch reference of `backbone` on one uint8 batch (B, S, S, 1) repeated."""
    check_available()
    import torch

    found = reference_builder(backbone)
    if found is None:
        return {"source": None, "images_per_s": None,
                "note": f"no PyTorch reference for {backbone}" + (" (install timm)" if backbone in TIMM else "")}
    build, source = found
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = build(targets.shape[1]).to(device).to(memory_format=torch.channels_last)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x8 = torch.from_numpy(np.ascontiguousarray(batch)).to(device)  # uint8 crosses, as in ours
    y = torch.from_numpy(targets.astype(np.float32)).to(device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    dtype = {"mixed_bfloat16": torch.bfloat16, "mixed_float16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    def step():
        x = x8.permute(0, 3, 1, 2).float().div(255).expand(-1, 3, -1, -1)
        x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(max(2, steps // 4)):  # warm-up (cuDNN's algorithm search)
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    rate = steps * len(batch) / (time.perf_counter() - t0)
    return {"source": source, "torch": torch.__version__, "device": str(device), "images_per_s": rate}
