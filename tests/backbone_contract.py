"""The contract every registered backbone passes on every installed engine (in the manner of keras-hub's
`run_backbone_test`): built into the classifier under mixed_bfloat16, it has the parameter count the registry lists,
outputs float32 probabilities of the right shape, and saves to `.keras` and reloads to the same outputs.

Run as a script (`python tests/backbone_contract.py NAME ...`) under another engine ($KERAS_BACKEND); prints one
JSON line per backbone."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

SIZE = 32


def run_backbone_contract(name: str, precision: str = "mixed_bfloat16") -> dict:
    import keras
    import numpy as np

    from benchmark.config import Config
    from benchmark.train.network import classifier_for
    from models.registry import REGISTRY

    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        model = classifier_for(Config(backbone=name, weights=None, image_size=SIZE, augment=False), 3)
        x = np.random.default_rng(0).integers(0, 255, (2, SIZE, SIZE, 1)).astype(np.uint8)
        out = np.asarray(model.predict(x, verbose=0))
        with tempfile.TemporaryDirectory() as tmp:
            model.save(Path(tmp) / "m.keras")
            again = np.asarray(keras.models.load_model(Path(tmp) / "m.keras").predict(x, verbose=0))
    finally:
        keras.config.set_dtype_policy(before)
    return {"backbone": name, "engine": keras.backend.backend(), "shape": list(out.shape), "dtype": str(out.dtype),
            "finite": bool(np.isfinite(out).all()), "in_range": bool(((out >= 0) & (out <= 1)).all()),
            "params": int(model.get_layer("backbone").count_params()), "listed": REGISTRY[name].params,
            "reload_max_diff": float(np.abs(out - again).max()),
            "compute_dtype": model.get_layer("backbone").dtype_policy.compute_dtype}


def check(result: dict) -> None:
    """The contract's assertions, shared by the in-process and the other-engine tests."""
    name = result["backbone"]
    assert result["shape"] == [2, 3] and result["dtype"] == "float32", result
    assert result["finite"] and result["in_range"], name
    assert result["params"] == result["listed"], name  # what `python -m benchmark models` lists
    assert result["compute_dtype"] == "bfloat16", name
    assert result["reload_max_diff"] <= 1e-6, name


if __name__ == "__main__":
    for backbone in sys.argv[1:]:
        print(json.dumps(run_backbone_contract(backbone)), flush=True)
