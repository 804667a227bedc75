"""Evaluation protocols: which images are the test set, which are validation (early stopping, learning-rate
decisions, the best epoch, thresholds), and which are trained on.

Loaders mark what a download defines: ``val`` for an official validation set (CheXpert's valid.csv, labelled by a
panel of radiologists), ``test`` for an official test set (CheXpert's released test labels, NIH's test_list.txt),
``train`` for the rest. A protocol then decides:

- ``valid_as_test``: the official validation set is the test set (CheXpert without its test labels: the set
  papers report on); validation is carved from the training images by patient.
- ``official_test``: the official test set is the test set; the official validation set is validation, or
  validation is carved from the training images by patient where there is none (NIH).
- ``carved_test``: the test set is carved from the training images by patient (CheXpert's validation set stays
  validation; NIH's lists are ignored): the arrangement of earlier versions, for comparison.
- ``auto`` (the default): ``official_test`` where the download has a test set, else ``valid_as_test`` where it has a
  validation set, else ``carved_test``; a CSV's own split column is used as given.
"""

from __future__ import annotations

import pandas as pd

from benchmark.data.splits import check_leakage, patient_split
from benchmark.errors import UserError

PROTOCOLS = ("auto", "valid_as_test", "official_test", "carved_test")


def _describe(frame: pd.DataFrame, part: str) -> str:
    rows = frame[frame["split"] == part]
    studies = rows["study"].nunique() if "study" in rows else len(rows)
    return f"{len(rows)} images of {rows['patient'].nunique()} patients ({studies} studies)"


def apply_protocol(frame: pd.DataFrame, protocol: str, val_fraction: float, test_fraction: float, seed: int,
                   source: str = "the data set") -> tuple[pd.DataFrame, dict]:
    """The frame with every row's split decided, and a record of the protocol for the report:
    {"name", "test", "val", "train"} in words."""
    frame = frame.copy()
    has_val = (frame["split"] == "val").any()
    has_test = (frame["split"] == "test").any()
    user = frame.attrs.get("user_split")
    origin = {"val": frame.attrs.get("val_source", "the official validation set"),
              "test": frame.attrs.get("test_source", frame.attrs.get("official_test", "the official test set"))}
    if protocol == "auto":
        protocol = ("user_split" if user else "official_test" if has_test else "valid_as_test" if has_val
                    else "carved_test")
    words = {}
    if protocol == "user_split":
        fractions = {k: f for k, f, present in (("val", val_fraction, has_val), ("test", test_fraction, has_test))
                     if not present}
        words = {"test": f"the split column ({user})" if has_test else "carved from train by patient",
                 "val": f"the split column ({user})" if has_val else "carved from train by patient"}
    elif protocol == "valid_as_test":
        if not has_val:
            raise UserError(f"{source}: protocol valid_as_test needs an official validation set (CheXpert's "
                            f"valid.csv beside train.csv, or valid_csv); use protocol: carved_test")
        frame = frame[frame["split"] != "test"]
        frame.loc[frame["split"] == "val", "split"] = "test"
        fractions = {"val": val_fraction}
        words = {"test": f"{origin['val']} (official validation set)",
                 "val": f"carved from the training images by patient ({val_fraction:.0%} of patients)"}
    elif protocol == "official_test":
        if not has_test:
            raise UserError(f"{source}: protocol official_test needs the official test labels (CheXpert: test_csv, "
                            f"e.g. test_labels.csv; NIH: test_list.txt beside the label file)")
        fractions = {} if has_val else {"val": val_fraction}
        words = {"test": f"{origin['test']} (official test set)",
                 "val": f"{origin['val']} (official validation set)" if has_val else
                 f"carved from the training images by patient ({val_fraction:.0%} of patients)"}
    elif protocol == "carved_test":
        frame = frame[frame["split"] != "test"] if has_test and has_val else frame
        if has_test and not has_val:  # NIH: the official lists are ignored
            frame.loc[frame["split"] == "test", "split"] = "train"
        fractions = {"test": test_fraction} if has_val else {"val": val_fraction, "test": test_fraction}
        words = {"test": f"carved from the training images by patient ({test_fraction:.0%} of patients)",
                 "val": f"{origin['val']} (official validation set)" if has_val else
                 f"carved from the training images by patient ({val_fraction:.0%} of patients)"}
    else:
        raise UserError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if fractions:
        pool = frame["split"] == "train"
        frame.loc[pool, "split"] = patient_split(frame.loc[pool, "patient"], fractions, seed)
    check_leakage(frame, user or frame.attrs.get("official_test") or "the split")
    record = {"name": protocol, "test": words["test"], "val": words["val"], "sizes": {
        part: _describe(frame, part) for part in ("train", "val", "test")}}
    return frame.reset_index(drop=True), record
