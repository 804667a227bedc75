"""Evaluation protocols: which images are test, validation and training, for CheXpert's layout (the phantom and a
hand-written download) and NIH's lists, and the errors when a protocol's set is missing."""

import pandas as pd
import pytest

from benchmark.config import Config
from benchmark.data.load import assign_splits, load_dataset, load_table
from benchmark.errors import UserError


def test_chexpert_default_tests_on_the_radiologist_labelled_valid_csv(phantom):
    ds, _ = load_dataset(Config(dataset="phantom", data_root=str(phantom), val_fraction=0.2))
    valid = set(pd.read_csv(phantom / "valid.csv").query("`Frontal/Lateral` == 'Frontal'")["Path"])
    assert set(ds.split("test")["path"]) == valid  # every frontal image of valid.csv, nothing else
    assert ds.split("val")["path"].str.contains("/train/").all()  # validation carved from train.csv
    parts = ds.frame.groupby("split")["patient"].apply(set)
    assert not (parts["val"] & parts["train"])
    assert ds.protocol["name"] == "valid_as_test" and "valid.csv" in ds.protocol["test"]
    assert "carved from the training images by patient (20% of patients)" == ds.protocol["val"]


def test_the_released_test_labels_are_the_test_set_when_given(phantom, tmp_path):
    import shutil

    root = tmp_path / "CheXpert-v1.0-small"
    shutil.copytree(phantom, root)
    train = pd.read_csv(root / "train.csv")
    held = train["Path"].str.extract(r"(patient\d+)")[0].isin(["patient00001", "patient00002", "patient00003"])
    train[held].to_csv(root / "test_labels.csv", index=False)  # found beside train.csv
    train[~held].to_csv(root / "train.csv", index=False)
    ds, _ = load_dataset(Config(dataset="chexpert", data_root=str(root)))
    assert ds.protocol["name"] == "official_test" and "test_labels.csv" in ds.protocol["test"]
    assert set(ds.split("test")["patient"]) == {"patient00001", "patient00002", "patient00003"}
    assert ds.split("val")["path"].str.contains("/valid/").all()  # valid.csv is validation now
    legacy, _ = load_dataset(Config(dataset="chexpert", data_root=str(root), protocol="carved_test"))
    assert legacy.split("val")["path"].str.contains("/valid/").all()
    assert legacy.split("test")["path"].str.contains("/train/").all() and legacy.protocol["name"] == "carved_test"
    assert not set(legacy.frame["patient"]) & {"patient00001", "patient00002", "patient00003"}  # the official
    # test images are not trained on under the older arrangement either: they are left out


def test_nih_official_lists_and_protocol_errors(tmp_path):
    rows = [(f"{p:08d}_000.png", p, "Effusion" if p % 3 == 0 else "No Finding") for p in range(1, 31)]
    pd.DataFrame({"Image Index": [r[0] for r in rows], "Patient ID": [r[1] for r in rows],
                  "Finding Labels": [r[2] for r in rows], "Patient Gender": ["M", "F"] * 15,
                  "Patient Age": ["058Y", "61"] * 15, "View Position": ["PA", "AP"] * 15}
                 ).to_csv(tmp_path / "Data_Entry_2017.csv", index=False)
    (tmp_path / "test_list.txt").write_text("\n".join(r[0] for r in rows[:6]))
    (tmp_path / "train_val_list.txt").write_text("\n".join(r[0] for r in rows[6:]))
    table = load_table("nih", tmp_path / "Data_Entry_2017.csv", tmp_path, need_files=False)
    assert table.frame["sex"].tolist()[:2] == ["M", "F"] and table.frame["age"].tolist()[:2] == [58, 61]
    ds = assign_splits(table, 0.2, 0.1, 0)
    assert ds.protocol["name"] == "official_test" and "test_list.txt" in ds.protocol["test"]
    assert sorted(ds.split("test")["path"]) == sorted(r[0] for r in rows[:6])
    assert len(ds.split("val")) == 5  # 20 % of the 24 train_val patients, carved by patient
    carved = assign_splits(table, 0.2, 0.1, 0, protocol="carved_test")
    assert set(carved.split("test")["path"]) != {r[0] for r in rows[:6]}  # the lists are ignored
    with pytest.raises(UserError, match="protocol valid_as_test needs an official validation set"):
        assign_splits(table, 0.2, 0.1, 0, protocol="valid_as_test")
    no_lists = tmp_path / "nolists"
    no_lists.mkdir()
    (no_lists / "Data_Entry_2017.csv").write_bytes((tmp_path / "Data_Entry_2017.csv").read_bytes())
    bare = load_table("nih", no_lists / "Data_Entry_2017.csv", no_lists, need_files=False)
    with pytest.raises(UserError, match="protocol official_test needs the official test labels"):
        assign_splits(bare, 0.2, 0.1, 0, protocol="official_test")
    assert assign_splits(bare, 0.2, 0.1, 0).protocol["name"] == "carved_test"


def test_a_csv_split_column_is_used_as_given(tmp_path):
    frame = pd.DataFrame({"path": [f"{i}.png" for i in range(8)], "subject": [0, 0, 1, 2, 3, 4, 5, 6],
                          "Edema": [1, 0, 1, 0, 1, 0, 1, 0], "fold": ["train"] * 4 + ["val", "val", "test", "test"]})
    frame.to_csv(tmp_path / "labels.csv", index=False)
    ds = assign_splits(load_table("csv", tmp_path / "labels.csv", tmp_path, path_column="path",
                                  patient_column="subject", split_column="fold"), 0.1, 0.1, 0)
    assert ds.protocol["name"] == "user_split" and ds.split("test")["path"].tolist() == ["6.png", "7.png"]
