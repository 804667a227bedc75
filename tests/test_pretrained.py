"""Pretrained weights for every backbone, offline: timm's ResNet34 checkpoint through keras-hub into our ResNet34
(the same outputs as keras-hub's network on random input), Keras's ImageNet files from a local folder, weights per
backbone, and the profiles of the comparison planning and building all five architectures with pretrained weights."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is the optional extra for ResNet34's ImageNet weights")

from benchmark.config import Config, load_config, weights_for  # noqa: E402
from benchmark.errors import UserError  # noqa: E402
from models.registry import build_backbone  # noqa: E402
from tests.helpers import ROOT, write_keras_notop, write_timm_resnet34  # noqa: E402


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """A local folder of pretrained weights, as a machine without internet would keep: timm/resnet34.a1_in1k/ and
    Keras's no-top files of the four keras.applications backbones."""
    from models.registry import get_spec

    folder = tmp_path_factory.mktemp("weights")
    write_timm_resnet34(folder / "timm" / "resnet34.a1_in1k")
    saved = {}
    for name in ("resnet50", "resnet101", "densenet121", "mobilenet"):
        saved[name] = write_keras_notop(folder / get_spec(name).imagenet_file, name)
    return folder, saved


def test_timm_resnet34_loads_into_our_network_and_computes_the_source_networks_outputs(mirror):
    folder, _ = mirror
    source = keras_hub.models.ResNetBackbone.from_preset(str(folder / "timm" / "resnet34.a1_in1k"))
    ours = build_backbone("resnet34", 96, "imagenet", str(folder))  # the same code path as a download
    x = np.random.default_rng(0).normal(0, 1, (2, 96, 96, 3)).astype(np.float32)
    expected = np.asarray(source(x, training=False))
    got = np.asarray(ours(x, training=False))
    assert got.shape == expected.shape == (2, 3, 3, 512)
    assert np.abs(got - expected).max() <= 1e-4
    as_path = build_backbone("resnet34", 96, str(folder / "timm" / "resnet34.a1_in1k"))  # weights: a folder
    assert np.abs(np.asarray(as_path(x, training=False)) - expected).max() <= 1e-4


def test_keras_imagenet_files_from_a_local_folder_before_any_download(mirror, monkeypatch):
    folder, saved = mirror
    from keras.src.utils import file_utils

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(file_utils, "get_file", no_network)
    model = build_backbone("mobilenet", 64, "imagenet", str(folder))
    for got, expected in zip(model.get_weights(), saved["mobilenet"]):
        np.testing.assert_array_equal(got, expected)
    monkeypatch.setenv("CXR_BENCH_WEIGHTS", str(folder))  # the environment variable works the same
    assert np.array_equal(build_backbone("mobilenet", 64, "imagenet").get_weights()[0], saved["mobilenet"][0])


def test_without_keras_hub_the_error_says_how_to_install_it(mirror, monkeypatch):
    import sys

    folder, _ = mirror
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # as if the extra were not installed
    with pytest.raises(UserError, match=r"keras-hub, which is not installed: pip install -e \.\[hub\]"):
        build_backbone("resnet34", 64, "imagenet", str(folder))


def test_offline_download_of_timm_weights_names_the_ways_out(tmp_path, monkeypatch):
    import keras_hub as hub

    def offline(*args, **kwargs):
        raise OSError("Could not resolve host huggingface.co")

    monkeypatch.setattr(hub.models.ResNetBackbone, "from_preset", offline)
    with pytest.raises(UserError, match=r"cannot download hf://timm/resnet34.a1_in1k .*weights_dir"):
        build_backbone("resnet34", 64, "imagenet", str(tmp_path))


def test_weights_per_backbone_and_a_backbone_without_imagenet_weights_is_refused(monkeypatch):
    cfg = Config(backbone="resnet34", weights={"default": "imagenet", "resnet34": None, "resnet50": "/w/r50.h5"})
    assert weights_for(cfg) is None and weights_for(cfg, "resnet50") == "/w/r50.h5"
    assert weights_for(cfg, "densenet121") == "imagenet"
    from models import registry

    monkeypatch.setitem(registry.REGISTRY, "plainnet", registry.REGISTRY["resnet34"].__class__(
        "plainnet", registry.REGISTRY["resnet34"].build, "torch", 1))
    with pytest.raises(UserError, match=r"plainnet has no ImageNet weights; train it from scratch with weights: "
                                        r"\{default: imagenet, plainnet: null\}"):
        load_config(ROOT / "configs" / "chexpert.yaml", {"backbones": ["densenet121", "plainnet"]})
    load_config(ROOT / "configs" / "chexpert.yaml",
                {"backbones": ["densenet121", "plainnet"], "weights": {"default": "imagenet", "plainnet": None}})
    with pytest.raises(UserError, match="weights must be imagenet, null"):
        load_config(ROOT / "configs" / "chexpert.yaml", {"weights": {"vgg": "imagenet"}})


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["chexpert", "nih"])
def test_the_comparison_profiles_plan_and_build_all_five_with_pretrained_weights(profile, mirror, phantom):
    from benchmark.runs.plan import plan_runs
    from benchmark.train.network import classifier_for

    folder, saved = mirror
    cfg = load_config(ROOT / "configs" / f"{profile}.yaml",
                      {"weights_dir": str(folder), "image_size": 64, "data_root": str(phantom)})
    runs = plan_runs(cfg)
    backbones = sorted({r.backbone for _, r in runs})
    assert backbones == ["densenet121", "mobilenet", "resnet101", "resnet34", "resnet50"]
    x = np.random.default_rng(1).integers(0, 255, (2, 64, 64, 1)).astype(np.uint8)
    for name in backbones:
        run_cfg = next(r for _, r in runs if r.backbone == name)
        assert weights_for(run_cfg) == "imagenet"
        model = classifier_for(run_cfg, 5)
        backbone = model.get_layer("backbone")
        if name in saved:
            np.testing.assert_array_equal(backbone.get_weights()[0], saved[name][0])
        out = model.predict(x, verbose=0)
        assert out.shape == (2, 5) and np.isfinite(out).all()
        assert all(layer.momentum == 0.99 for layer in backbone._flatten_layers()
                   if isinstance(layer, keras.layers.BatchNormalization))  # pretrained: the backbone's own
