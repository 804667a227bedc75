"""PyTorch: deterministic algorithms on request, torch.compile with `xla`, autograd for Grad-CAM."""

from __future__ import annotations

from benchmark.engines.base import Engine


class TorchEngine(Engine):
    name = "torch"

    def accelerator(self) -> bool:
        import torch

        return torch.cuda.is_available()

    def deterministic(self) -> None:
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False

    def gradient(self, score, feats):
        import torch

        f = feats.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(score(f), f)
        return grad

    def versions(self) -> dict:
        import torch

        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                "devices": ["CPU:0"] + [f"GPU:{i}" for i in range(len(gpus))], "gpus": gpus}
