import pytest

from benchmark.config import Config, grid, load_config, merge, parse_set, run_name
from benchmark.errors import UserError
from benchmark.sweep import plan_runs
from tests.helpers import ROOT


def test_profiles_load():
    for name in ("quick", "chexpert", "nih", "policies", "ci"):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert isinstance(cfg, Config)
    quick = load_config(ROOT / "configs" / "quick.yaml")
    assert quick.backbones == ("resnet34", "resnet50", "resnet101", "densenet121", "mobilenet")
    assert quick.weights is None and quick.image_size == 64


def test_set_overrides_take_yaml_values():
    values = parse_set(["epochs=2", "backbones=[mobilenet,resnet34]", "weights=null", "learning_rate=1e-4",
                        "policy={Edema: ones}"])
    cfg = load_config(ROOT / "configs" / "quick.yaml", values)
    assert cfg.epochs == 2 and cfg.backbones == ("mobilenet", "resnet34")
    assert cfg.weights is None and cfg.learning_rate == pytest.approx(1e-4)
    assert cfg.policy == {"Edema": "ones"}


def test_unknown_key_and_bad_values_are_clear_errors():
    with pytest.raises(UserError, match="unknown config key 'epoch'"):
        merge(Config(), {"epoch": 3}, "--set")
    with pytest.raises(UserError, match="epochs must be an integer"):
        merge(Config(), {"epochs": "many"}, "--set")
    with pytest.raises(UserError, match="policy 'maybe'"):
        merge(Config(), {"policy": "maybe"}, "x.yaml")
    with pytest.raises(UserError, match="expected key=value"):
        parse_set(["epochs"])
    with pytest.raises(UserError, match="does not exist"):
        load_config(ROOT / "configs" / "nope.yaml")


def test_frozen():
    with pytest.raises(Exception):
        Config().epochs = 3


def test_grid_and_names():
    cfg = Config(backbones=("mobilenet", "resnet34"), policies=("zeros", "ones"), seeds=(0, 1))
    runs = grid(cfg)
    assert len(runs) == 8
    assert {(r.backbone, r.policy, r.seed) for r in runs} == {
        (b, p, s) for b in ("mobilenet", "resnet34") for p in ("zeros", "ones") for s in (0, 1)}
    assert all(r.backbones == () for r in runs)
    names = [n for n, _ in plan_runs(cfg)]
    assert "mobilenet-zeros-s0" in names and len(set(names)) == 8
    assert run_name(Config(backbone="resnet50"), set()) == "resnet50"
