"""Published per-label AUROCs, shown only beside numbers of a comparable protocol: the same data set, the same test
set (`protocol`) and the same scoring unit. Each reference says where its numbers are (paper and table) and what
still differs from a run of that protocol; the report names the references it leaves out, and why.

The CheXpert values are the best-per-label row quoted from Table 3 of the paper (checked here against a
secondary source that quotes that table; the per-policy rows are not reproduced, as they could not be checked).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reference:
    key: str
    citation: str
    dataset: str  # a format name of benchmark.data.formats
    protocol: str  # the protocol whose test set it was measured on (benchmark.data.protocols)
    unit: str  # "study" or "image"
    auroc: dict
    differs: str  # what still differs from a run of that protocol and unit
    same_test_set: bool = True  # False where the protocol matches but the test images do not (the page says so)


CHEXPERT = Reference(
    "chexpert",
    "Irvin et al., CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels and Expert Comparison, AAAI "
    "2019, Table 3 (the 200-study validation set labelled by 3 radiologists; per study)",
    "chexpert", "valid_as_test", "study",
    {"Atelectasis": 0.858, "Cardiomegaly": 0.854, "Consolidation": 0.939, "Edema": 0.941, "Pleural Effusion": 0.936},
    "an ensemble of 30 DenseNet121 checkpoints at 320 px on frontal and lateral views, and for each label the best of "
    "five uncertainty approaches chosen on this same validation set (which flatters the reference)")

CHEXNET = Reference(
    "chexnet",
    "Rajpurkar et al., CheXNet: Radiologist-Level Pneumonia Detection on Chest X-Rays with Deep Learning, "
    "arXiv:1711.05225 (2017), Table 2 (DenseNet121, 224 px; per image)",
    "nih", "carved_test", "image",
    {"Atelectasis": 0.8094, "Cardiomegaly": 0.9248, "Effusion": 0.8638, "Infiltration": 0.7345, "Mass": 0.8676,
     "Nodule": 0.7802, "Pneumonia": 0.7680, "Pneumothorax": 0.8887, "Consolidation": 0.7901, "Edema": 0.8878,
     "Emphysema": 0.9371, "Fibrosis": 0.8047, "Pleural_Thickening": 0.8062, "Hernia": 0.9164},
    "their own random patient-wise split (not NIH's test_list.txt, and not this run's split): the test images differ",
    same_test_set=False)

REFERENCES = {ref.key: ref for ref in (CHEXPERT, CHEXNET)}


def references_for(dataset: str, keys=(), protocol: str | None = None, unit: str | None = None
                   ) -> tuple[list[Reference], list[tuple[Reference, str]]]:
    """(shown, left out with the reason): references among `keys` (the data set format's) measured on `dataset`;
    shown only where `protocol` and `unit` match theirs."""
    shown, left = [], []
    for key in keys:
        ref = REFERENCES.get(key)
        if ref is None or ref.dataset != dataset:
            continue
        if protocol != ref.protocol:
            left.append((ref, f"measured with protocol {ref.protocol}, these runs with {protocol}"))
        elif unit != ref.unit:
            left.append((ref, f"scored per {ref.unit}, these runs per {unit}"))
        else:
            shown.append(ref)
    return shown, left
