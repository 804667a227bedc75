"""JAX: every step compiled (XLA is how JAX runs), deterministic GPU kernels through an XLA flag."""

from __future__ import annotations

import os

from benchmark.engines.base import Engine


class JaxEngine(Engine):
    name = "jax"

    def accelerator(self) -> bool:
        import jax

        return any(d.platform == "gpu" for d in jax.devices())

    def deterministic(self) -> None:
        # read when JAX first meets its devices
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true").strip()

    def jit(self, cfg) -> bool:
        return True  # uncompiled, each op is dispatched on its own (~30x slower)

    def gradient(self, score, feats):
        import jax

        return jax.grad(score)(feats)

    def versions(self) -> dict:
        import jax
        import jaxlib

        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                "devices": [f"{d.platform.upper()}:{d.id}" for d in jax.devices()],
                "gpus": [d.device_kind for d in jax.devices() if d.platform == "gpu"]}
