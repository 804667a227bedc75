"""The registry: every backbone builds on tiny input with weights=None, the right output, save/load round trip,
and the clear errors."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from benchmark.config import Config  # noqa: E402
from benchmark.errors import UserError  # noqa: E402
from benchmark.train.network import classifier_for  # noqa: E402
from models.classifier import set_bn_momentum  # noqa: E402
from models.flops import count_flops  # noqa: E402
from models.registry import REGISTRY, build_backbone, get_spec  # noqa: E402

REQUIRED = ("resnet34", "resnet50", "resnet101", "densenet121", "mobilenet")


def test_required_and_extra_backbones_are_registered():
    assert set(REQUIRED) <= set(REGISTRY)
    assert {"mobilenetv2", "efficientnetb0", "densenet169", "convnext_tiny"} <= set(REGISTRY)
    with pytest.raises(UserError, match="unknown backbone 'resnet35'; valid: .*resnet34"):
        get_spec("resnet35")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_backbone_keeps_the_backbone_contract(name):
    from tests.backbone_contract import check, run_backbone_contract

    check(run_backbone_contract(name))
    model = classifier_for(Config(backbone=name, weights=None, image_size=32, augment=False), 3)
    assert [layer.name for layer in model.layers][-2:] == ["backbone", "head"]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["jax", "torch"])
def test_every_backbone_keeps_the_backbone_contract_on_the_other_engines(engine):
    """The same contract under Keras's JAX and PyTorch engines (each that is installed), in a process of its own:
    the two smallest backbones by default (every registered one takes 2.5 minutes on JAX on 2 CPU cores), all of
    them with CXR_BENCH_CONTRACT=all."""
    import importlib.util
    import json
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    if importlib.util.find_spec(engine) is None:
        pytest.skip(f"{engine} is not installed")
    from tests.backbone_contract import check

    names = sorted(REGISTRY) if os.environ.get("CXR_BENCH_CONTRACT") == "all" else ["mobilenet", "resnet34"]
    env = {**os.environ, "KERAS_BACKEND": engine}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "backbone_contract.py"), *names],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["backbone"] for r in results] == names
    for r in results:
        assert r["engine"] == engine
        check(r)


def test_resnet34_is_the_basic_block_network():
    base = build_backbone("resnet34", 224, None)
    trainable = sum(int(np.prod(w.shape)) for w in base.trainable_weights)
    assert trainable == 21_284_672  # torchvision's resnet34 without its fc layer
    adds = [layer for layer in base.layers if layer.name.endswith("_add")]
    assert len(adds) == 3 + 4 + 6 + 3
    assert base.output.shape[1:] == (7, 7, 512)
    assert count_flops(base) == pytest.approx(7.3e9, rel=0.05)  # 3.6 GMACs


def test_save_load_round_trip_and_weights_file(tmp_path):
    cfg = Config(backbone="resnet34", weights=None, image_size=32)
    model = classifier_for(cfg, 2)
    x = np.random.default_rng(1).integers(0, 255, (3, 32, 32, 1)).astype(np.uint8)
    before = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), before, rtol=1e-5, atol=1e-6)
    # a weights file for the backbone alone loads through weights=PATH
    model.get_layer("backbone").save_weights(tmp_path / "r34.weights.h5")
    again = build_backbone("resnet34", 32, str(tmp_path / "r34.weights.h5"))
    np.testing.assert_allclose(again.get_weights()[0], model.get_layer("backbone").get_weights()[0])
    with pytest.raises(UserError, match="does not match backbone mobilenet"):
        build_backbone("mobilenet", 32, str(tmp_path / "r34.weights.h5"))
    with pytest.raises(UserError, match="does not exist"):
        build_backbone("mobilenet", 32, str(tmp_path / "nope.weights.h5"))


def test_size_and_imagenet_errors(monkeypatch):
    with pytest.raises(UserError, match="too small for densenet121; use at least 32"):
        build_backbone("densenet121", 24, None)

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/tensorflow/keras-applications/"
                        "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5: None -- [Errno -3]")

    from keras.src.utils import file_utils

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(UserError, match=r"place resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 in .*\.keras/models"):
        build_backbone("resnet50", 64, "imagenet")


def test_heads_and_bn_momentum():
    cfg = Config(backbone="mobilenet", weights=None, image_size=32, head_hidden=16, per_label_heads=True, dropout=0.3)
    model = classifier_for(cfg, 4)
    head = model.get_layer("head")
    assert {"hidden", "dropout", "label_0", "label_3", "probabilities"} <= {layer.name for layer in head.layers}
    assert head.get_layer("probabilities").dtype_policy.compute_dtype == "float32"
    bns = [layer for layer in model.get_layer("backbone").layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(layer.momentum == 0.9 for layer in bns)  # from scratch: the faster statistics
    assert set_bn_momentum(model, 0.95) == len(bns)


def test_residual_blocks_start_as_identity_from_scratch():
    for name, blocks in (("resnet34", 16), ("resnet50", 16), ("resnet101", 33)):
        model = classifier_for(Config(backbone=name, weights=None, image_size=32), 2)
        zeroed = [layer for layer in model.get_layer("backbone").layers
                  if isinstance(layer, keras.layers.BatchNormalization) and not np.any(layer.get_weights()[0])]
        assert len(zeroed) == blocks, name


def test_preprocessing_modes():
    from models.layers import GrayToBackbone

    x = np.full((1, 2, 2, 1), 255.0, np.float32)
    assert np.allclose(GrayToBackbone("tf")(x), 1.0)
    torch = np.asarray(GrayToBackbone("torch")(x))
    assert torch.shape == (1, 2, 2, 3)
    assert np.allclose(torch[0, 0, 0], [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225])
    assert np.allclose(np.asarray(GrayToBackbone("caffe")(x))[0, 0, 0], [255 - 103.939, 255 - 116.779, 255 - 123.68])
