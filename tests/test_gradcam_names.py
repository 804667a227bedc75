"""predict --gradcam: two inputs never share an overlay file, and an existing file (a user's, an earlier
predict's, a link) is never replaced or followed. The naming and writing that predict_images uses, without a
model."""

import os

from benchmark.evaluation.evaluate import overlay_stem, write_new


def test_two_inputs_of_one_file_name_get_their_own_overlays(tmp_path):
    images = ["/data/CheXpert-v1.0/valid/patient64541/study1/view1_frontal.jpg",
              "/data/CheXpert-v1.0/valid/patient64542/study1/view1_frontal.jpg"]
    stems = [overlay_stem(i, p) for i, p in enumerate(images)]
    assert stems == ["001_view1_frontal", "002_view1_frontal"]
    written = [write_new(tmp_path, f"{s}_Edema", ".png", bytes([i])) for i, s in enumerate(stems)]
    assert len(set(written)) == 2 and [p.read_bytes() for p in written] == [b"\x00", b"\x01"]


def test_an_existing_file_is_never_replaced_nor_a_link_followed(tmp_path):
    (tmp_path / "001_a_Edema.png").write_bytes(b"the user's figure")
    precious = tmp_path / "precious.txt"
    precious.write_text("keep")
    os.symlink(precious, tmp_path / "001_a_Edema-2.png")
    target = write_new(tmp_path, "001_a_Edema", ".png", b"overlay")
    assert target.name == "001_a_Edema-3.png" and target.read_bytes() == b"overlay"
    assert (tmp_path / "001_a_Edema.png").read_bytes() == b"the user's figure"
    assert precious.read_text() == "keep"
