import pytest

from benchmark.config import Config, grid, load_config, merge, parse_set, run_name
from benchmark.errors import UserError
from benchmark.runs.plan import plan_runs
from tests.helpers import ROOT, one_line_error, run_cli


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
    with pytest.raises(UserError, match="x.yaml: policy must be one of .*got 'maybe'"):
        merge(Config(), {"policy": "maybe"}, "x.yaml")
    with pytest.raises(UserError, match="expected key=value"):
        parse_set(["epochs"])
    with pytest.raises(UserError, match="does not exist"):
        load_config(ROOT / "configs" / "nope.yaml")


def test_frozen():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
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


@pytest.mark.parametrize("key,value,expected", [
    ("image_sizes", "[x]", "image_sizes[0] must be an integer, got 'x'"),
    ("labels", "5", "labels must be a label set"),
    ("projections", "5", "projections must be a list of projections"),
    ("image_sizes", "[1.5]", "image_sizes[0] must be an integer, got 1.5"),
    ("seeds", "[a]", "seeds[0] must be an integer, got 'a'"),
    ("bootstrap", "-1", "bootstrap must be 0 (no confidence intervals) or 50 to 100000, got -1"),
    ("plateau_factor", "2", "plateau_factor must be a number in (0, 1), got 2.0"),
    ("steps_per_epoch", "0", "steps_per_epoch must be an integer at least 1, got 0"),
    ("max_train_images", "0", "max_train_images must be an integer at least 1, got 0"),
    ("max_train_images", "-5", "max_train_images must be an integer at least 1, got -5"),
    ("backbones", "[mobilenet, vgg16]", "backbones[1] must be a registered backbone"),
    ("policies", "[zeros, maybe]", "policies[1] must be one of ignore"),
    ("val_fraction", "0.95", "val_fraction + test_fraction must be below 1"),
    ("run_timeout", "0", "run_timeout must be a number above 0"),
    ("image_size", "8", "image_size must be an integer in [16, 4096], got 8"),
    ("dataset", "mimic", "dataset must be one of phantom, chexpert, nih, csv"),
])
def test_every_value_is_checked_when_the_configuration_is_loaded(key, value, expected):
    with pytest.raises(UserError) as err:
        load_config(ROOT / "configs" / "quick.yaml", parse_set([f"{key}={value}"]))
    assert str(err.value).startswith("--set: ") and expected in str(err.value), str(err.value)


def test_a_bad_value_is_one_line_and_exit_2_before_any_work(tmp_path):
    result = run_cli("sweep", "--config", ROOT / "configs" / "ci.yaml", "--out", tmp_path / "s", "--set",
                     "image_sizes=[1.5]")
    one_line_error(result, "image_sizes[0] must be an integer, got 1.5")
    assert not (tmp_path / "s").exists()  # refused before the sweep folder was made


def test_every_key_is_declared_once_with_a_doc_and_the_lists_derive_from_it():
    from benchmark import config as c
    from benchmark.runs.fingerprint import config_part

    assert all(spec.doc.strip() for spec in c.KEYS.values()), [n for n, s in c.KEYS.items() if not s.doc.strip()]
    assert set(c.PATH_KEYS) >= {"data_root", "train_csv", "valid_csv", "test_csv", "cache_dir", "weights_dir",
                                "external"}
    assert {"mlflow", "ray_address"} <= c.SECRET_KEYS
    assert set(c.SWEEP_KEYS.values()) <= set(c.KEYS) and "seeds" in c.SWEEP_KEYS
    # the fingerprint keeps exactly the declared result keys (a run's axes are empty)
    part = config_part(Config())
    assert not set(part) & c.NON_RESULT_KEYS and "epochs" in part and "launcher" not in part


def test_configs_readme_lists_every_key_as_declared():
    from benchmark.config import key_table

    text = (ROOT / "configs" / "README.md").read_text()
    table = text.split("do not edit by hand -->\n", 1)[1].split("<!-- keys end -->", 1)[0]
    assert table == key_table(), "configs/README.md is stale: paste `python -m benchmark config-keys` into it"
    assert "`bn_reestimate_batches`" in table and "`min_positives`" in table


def test_backend_is_the_earlier_name_of_launcher():
    assert merge(Config(), {"backend": "ray"}, "--set").launcher == "ray"
    cfg = load_config(None, parse_set(["backend=ray"]))
    assert cfg.launcher == "ray" and cfg.backend == "ray" and "backend" not in cfg.to_dict()
    with pytest.raises(UserError, match="earlier name of launcher"):
        merge(Config(), {"backend": "ray", "launcher": "local"}, "profile.yaml")


def test_a_configuration_is_the_result_keys_without_the_seed():
    from benchmark.config import configuration_of

    a = Config(seed=1, backbone="mobilenet").to_dict()
    b = {**Config(seed=2, backbone="mobilenet").to_dict(), "name": "other", "run_timeout": 9, "backend": "ray"}
    assert configuration_of(a) == configuration_of(b)
    assert configuration_of(a) != configuration_of(Config(seed=1, backbone="resnet34").to_dict())
    assert "seed" not in configuration_of(a) and "learning_rate" in configuration_of(a)


def test_nan_and_infinite_numbers_are_refused():
    for value in (".nan", ".inf"):
        with pytest.raises(UserError, match="val_fraction must be a number"):
            load_config(None, parse_set([f"val_fraction={value}"]))
