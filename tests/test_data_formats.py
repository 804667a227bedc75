import json
import os
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from benchmark.config import Config
from benchmark.data.inspect import inspect_table
from benchmark.data.labels import CHEXPERT_14, NIH_14
from benchmark.data.load import assign_splits, load_dataset, load_table
from benchmark.errors import UserError
from tests.helpers import CHEXPERT_META, NIH_META, NIH_SAMPLE, needs_shared, run_cli


def write_chexpert(folder, rows, name="train.csv"):
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_14]
    frame = pd.DataFrame(rows, columns=header)
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / name, index=False)
    return folder / name


def row(path, view="Frontal", **labels):
    values = [labels.get(lab.replace(" ", "_"), "") for lab in CHEXPERT_14]
    return [path, "Female", 60, view, "AP" if view == "Frontal" else "", *values]


@pytest.fixture
def chexpert(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    rows = [row("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", Edema=1.0, Cardiomegaly=-1.0),
            row("CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg", view="Lateral", Edema=1.0),
            row("CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg", Edema=0.0),
            row("CheXpert-v1.0-small/train/patient00003/study2/view1_frontal.jpg", Atelectasis=1.0)]
    write_chexpert(root, rows)
    write_chexpert(root, [row("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", Edema=1.0)],
                   "valid.csv")
    for r in rows + [row("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg")]:
        f = tmp_path / r[0]
        f.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(f), np.full((40, 30), 128, np.uint8))
    return root


def test_chexpert_paths_resolve_from_the_folder_or_its_parent(chexpert):
    for root in (chexpert, chexpert.parent):
        ds = load_table("chexpert", chexpert / "train.csv", root)
        assert all(os.path.isfile(f) for f in ds.frame["file"]), ds.frame["file"].tolist()
    ds = load_table("chexpert", chexpert / "train.csv", chexpert)
    assert len(ds.frame) == 4  # 3 frontal train + 1 valid; the lateral is filtered out
    assert set(ds.frame["split"]) == {"train", "val"}
    assert ds.frame["patient"].tolist()[:3] == ["patient00001", "patient00002", "patient00003"]
    edema = ds.frame["Edema"].tolist()
    assert edema[:3] == [1.0, 0.0, 0.0] or np.isnan(edema[2])
    assert ds.frame["Cardiomegaly"].iloc[0] == -1.0
    assert len(load_table("chexpert", chexpert / "train.csv", chexpert, views="all").frame) == 5


def test_chexpert_bad_inputs(tmp_path, chexpert):
    bad = tmp_path / "bad"
    write_chexpert(bad, [row("CheXpert-v1.0-small/train/patient1/study1/view1_frontal.jpg", Edema=2.0)])
    with pytest.raises(UserError, match=r"column 'Edema', line 2: value 2.0 is not a label"):
        load_table("chexpert", bad / "train.csv", bad)
    write_chexpert(bad, [row("CheXpert-v1.0-small/train/patient1/study1/view1_frontal.jpg", Edema="yes")])
    with pytest.raises(UserError, match=r"value 'yes'"):
        load_table("chexpert", bad / "train.csv", bad)
    write_chexpert(bad, [row("../../etc/passwd")])
    with pytest.raises(UserError, match="escapes the data root"):
        load_table("chexpert", bad / "train.csv", bad)
    pd.DataFrame({"Path": ["a.jpg"], "Edema": [1]}).to_csv(bad / "train.csv", index=False)
    with pytest.raises(UserError, match="missing label column"):
        load_table("chexpert", bad / "train.csv", bad)
    with pytest.raises(UserError, match="does not exist"):
        load_table("chexpert", bad / "nope.csv", bad)
    with pytest.raises(UserError, match="data root .* does not exist"):
        load_table("chexpert", chexpert / "train.csv", tmp_path / "missing")
    write_chexpert(bad, [row("CheXpert-v1.0-small/train/patient1/study1/view2_lateral.jpg", view="Lateral")])
    with pytest.raises(UserError, match="no images left after filtering"):
        load_table("chexpert", bad / "train.csv", bad)


def test_nih_loader_labels_lists_and_archive_folders(tmp_path):
    frame = pd.DataFrame({
        "Image Index": ["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000003_000.png"],
        "Finding Labels": ["Cardiomegaly|Effusion", "No Finding", "Pleural_Thickening", "Hernia"],
        "Follow-up #": [0, 1, 0, 0], "Patient ID": [1, 1, 2, 3], "View Position": ["PA", "AP", "PA", "PA"]})
    frame.to_csv(tmp_path / "Data_Entry_2017.csv", index=False)
    for i, name in enumerate(frame["Image Index"]):
        folder = tmp_path / f"images_00{1 + i % 2}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name), np.zeros((8, 8), np.uint8))
    ds = load_table("nih", tmp_path / "Data_Entry_2017.csv", tmp_path)
    assert ds.labels == NIH_14
    assert ds.frame.loc[0, ["Cardiomegaly", "Effusion", "Atelectasis"]].tolist() == [1.0, 1.0, 0.0]
    assert ds.frame.loc[1, list(NIH_14)].sum() == 0
    assert ds.frame.loc[2, "Pleural_Thickening"] == 1.0
    assert all(os.path.isfile(f) for f in ds.frame["file"])
    (tmp_path / "test_list.txt").write_text("00000002_000.png\n")
    (tmp_path / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000003_000.png\n")
    ds = load_table("nih", tmp_path / "Data_Entry_2017.csv", tmp_path)
    assert ds.frame.set_index("path").loc["00000002_000.png", "split"] == "test"
    (tmp_path / "test_list.txt").write_text("00000001_001.png\n")  # patient 1 in train and test: refused
    with pytest.raises(UserError, match="patient 1"):
        assign_splits(load_table("nih", tmp_path / "Data_Entry_2017.csv", tmp_path), 0.1, 0.1, 0)
    frame.loc[3, "Finding Labels"] = "Covid"
    frame.to_csv(tmp_path / "Data_Entry_2017.csv", index=False)
    with pytest.raises(UserError, match="unknown finding 'Covid'"):
        load_table("nih", tmp_path / "Data_Entry_2017.csv", tmp_path)


def test_generic_csv(tmp_path):
    frame = pd.DataFrame({"image": [f"img/{i}.png" for i in range(6)], "subject": [0, 0, 1, 1, 2, 3],
                          "effusion": [1, 0, -1, "", 1, 0], "mass": [0, 0, 1, 1, 0, ""], "age": [50, 60, 70, 80, 90, 40],
                          "fold": ["train", "train", "val", "val", "test", "TEST"]})
    frame.to_csv(tmp_path / "labels.csv", index=False)
    ds = load_table("csv", tmp_path / "labels.csv", tmp_path, path_column="image", patient_column="subject",
                    split_column="fold")
    assert ds.labels == ("effusion", "mass")  # 'age' is not a label column
    assert ds.frame["split"].tolist() == ["train", "train", "val", "val", "test", "test"]
    assert np.isnan(ds.frame["effusion"].iloc[3]) and ds.frame["effusion"].iloc[2] == -1
    frame.loc[0, "fold"] = "holdout"
    frame.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(UserError, match="'holdout' is not train, val or test"):
        load_table("csv", tmp_path / "labels.csv", tmp_path, path_column="image", split_column="fold")
    with pytest.raises(UserError, match="missing column"):
        load_table("csv", tmp_path / "labels.csv", tmp_path, path_column="file")


def test_load_dataset_carves_a_patientwise_test_split_under_the_older_protocol(phantom):
    cfg = Config(dataset="phantom", data_root=str(phantom), test_fraction=0.2, protocol="carved_test")
    ds, labels = load_dataset(cfg)
    assert labels == ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
    parts = ds.frame.groupby("split")["patient"].apply(set)
    assert not (parts["train"] & parts["test"]) and not (parts["val"] & parts["train"])
    assert (ds.frame["view"] == "frontal").all()
    assert ds.split("val")["path"].str.contains("/valid/").all()


def test_inspect_counts_by_hand(chexpert):
    out = inspect_table("chexpert", chexpert / "train.csv", policy="ones")
    assert out["images"] == 3 and out["patients"] == 3 and out["studies"] == 3
    assert out["views"] == {"frontal": 3, "lateral": 0}
    assert out["labels"]["Cardiomegaly"] == {"positive": 0, "negative": 0, "uncertain": 1, "blank": 2}
    assert out["after_policy"]["Cardiomegaly"] == {"positive": 1, "negative": 2, "ignored": 0}
    out = inspect_table("chexpert", chexpert / "train.csv", policy="ignore", all_views=True)
    assert out["images"] == 4 and out["views"] == {"frontal": 3, "lateral": 1}
    assert out["after_policy"]["Cardiomegaly"] == {"positive": 0, "negative": 3, "ignored": 1}


@needs_shared
def test_inspect_real_chexpert_metadata_matches_pandas():
    result = run_cli("data", "inspect", "--dataset", "chexpert", "--csv", CHEXPERT_META, "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    raw = pd.read_csv(CHEXPERT_META)
    frontal = raw[raw["Frontal/Lateral"] == "Frontal"]
    assert out["images"] == len(frontal) == 191027
    assert out["patients"] == frontal["Path"].str.extract(r"(patient\d+)")[0].nunique()
    for label in ("Edema", "Pleural Effusion", "No Finding"):
        assert out["labels"][label]["positive"] == int((frontal[label] == 1).sum())
        assert out["labels"][label]["uncertain"] == int((frontal[label] == -1).sum())
        assert out["labels"][label]["blank"] == int(frontal[label].isna().sum())
    # mixed: uncertain Edema counts as positive, uncertain Cardiomegaly as negative
    assert out["after_policy"]["Edema"]["positive"] == int(frontal["Edema"].isin([1, -1]).sum())
    assert out["after_policy"]["Cardiomegaly"]["positive"] == int((frontal["Cardiomegaly"] == 1).sum())
    result = run_cli("data", "inspect", "--dataset", "chexpert", "--csv", CHEXPERT_META, "--json", "--all-views")
    assert json.loads(result.stdout)["images"] == len(raw) == 223414


@needs_shared
def test_inspect_real_nih_metadata():
    result = run_cli("data", "inspect", "--dataset", "nih", "--csv", NIH_META, "--json")
    out = json.loads(result.stdout)
    raw = pd.read_csv(NIH_META)
    assert out["images"] == 112120 and out["patients"] == raw["Patient ID"].nunique() == 30805
    assert out["labels"]["Hernia"]["positive"] == int(raw["Finding Labels"].str.contains("Hernia").sum())
    assert out["studies"] is None


@needs_shared
def test_nih_sample_with_images(tmp_path):
    shutil.copy(NIH_SAMPLE / "Data_Entry_2017.csv", tmp_path / "Data_Entry_2017.csv")
    (tmp_path / "images").symlink_to(NIH_SAMPLE / "images")
    ds, labels = load_dataset(Config(dataset="nih", data_root=str(tmp_path), labels="nih14"))
    assert len(ds.frame) == 421 and labels == NIH_14
    assert all(os.path.isfile(f) for f in ds.frame["file"])
    assert ds.frame[list(NIH_14)].sum().min() >= 1  # every label occurs in the sample


def test_a_path_is_checked_as_it_is_opened_after_the_prefix_is_removed(tmp_path, chexpert):
    # With --data-root at the download's own folder the first component is removed: the rest must stay inside.
    bad = chexpert.parent / "bad" / "CheXpert-v1.0-small"
    write_chexpert(bad, [row("CheXpert-v1.0-small/../x.jpg")])
    (bad / "x.jpg").write_bytes(b"")
    with pytest.raises(UserError, match=r"line 2: path 'CheXpert-v1.0-small/../x.jpg' escapes the data root"):
        load_table("chexpert", bad / "train.csv", bad)
    write_chexpert(bad, [row("CheXpert-v1.0-small/train/../../../../etc/passwd")])
    with pytest.raises(UserError, match="escapes the data root"):
        load_table("chexpert", bad / "train.csv", bad.parent)
    # a symbolic link inside the data root is the user's own (data on another disk): followed
    elsewhere = tmp_path / "other-disk" / "train"
    elsewhere.mkdir(parents=True)
    cv2.imwrite(str(elsewhere / "view1_frontal.jpg"), np.full((20, 20), 90, np.uint8))
    linked = tmp_path / "linked" / "CheXpert-v1.0-small"
    linked.mkdir(parents=True)
    (linked / "train").symlink_to(elsewhere)
    write_chexpert(linked, [row("CheXpert-v1.0-small/train/view1_frontal.jpg")])
    ds = load_table("chexpert", linked / "train.csv", linked)
    assert os.path.isfile(ds.frame["file"].iloc[0])


def test_empty_header_only_and_duplicate_label_files(tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="empty.csv is empty"):
        load_table("csv", tmp_path / "empty.csv", tmp_path, path_column="path")
    (tmp_path / "header.csv").write_text("path,Edema\n")
    with pytest.raises(UserError, match="header.csv has a header but no rows"):
        load_table("csv", tmp_path / "header.csv", tmp_path, path_column="path")
    pd.DataFrame({"path": ["a.png", "b.png", "a.png"], "Edema": [1, 0, 1]}).to_csv(tmp_path / "dup.csv", index=False)
    ds = load_table("csv", tmp_path / "dup.csv", tmp_path, path_column="path")
    assert ds.frame["path"].tolist() == ["a.png", "b.png"]  # the repeat is dropped
    assert "listed more than once with the same labels" in capsys.readouterr().err
    pd.DataFrame({"path": ["a.png", "b.png", "a.png"], "Edema": [1, 0, 0]}).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(UserError, match=r"image 'a.png' is listed 2 times with different labels \(rows 1, 3\)"):
        load_table("csv", tmp_path / "dup.csv", tmp_path, path_column="path")
    result = run_cli("data", "inspect", "--dataset", "chexpert", "--csv", tmp_path / "empty.csv")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "is empty" in result.stderr
