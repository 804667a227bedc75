"""Published per-label AUROCs shown beside our results, with their sources. Different data, splits and image
sizes: a reference point, not a like-for-like comparison."""

CHEXNET = {
    "citation": "Rajpurkar et al., CheXNet: Radiologist-Level Pneumonia Detection on Chest X-Rays with Deep "
                "Learning, arXiv:1711.05225 (2017), Table 2 (NIH ChestX-ray14 test set, DenseNet121, 224 px)",
    "dataset": "nih",
    "auroc": {"Atelectasis": 0.8094, "Cardiomegaly": 0.9248, "Effusion": 0.8638, "Infiltration": 0.7345,
              "Mass": 0.8676, "Nodule": 0.7802, "Pneumonia": 0.7680, "Pneumothorax": 0.8887,
              "Consolidation": 0.7901, "Edema": 0.8878, "Emphysema": 0.9371, "Fibrosis": 0.8047,
              "Pleural_Thickening": 0.8062, "Hernia": 0.9164},
}

CHEXPERT = {
    "citation": "Irvin et al., CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels and Expert "
                "Comparison, AAAI 2019, Table 2 (validation set, DenseNet121, 320 px), best policy per label",
    "dataset": "chexpert",
    "auroc": {"Atelectasis": 0.858, "Cardiomegaly": 0.854, "Consolidation": 0.939, "Edema": 0.941,
              "Pleural Effusion": 0.936},
}


def references_for(dataset: str) -> list[dict]:
    """The published tables that apply to a data set kind (the phantom gets none: it is synthetic)."""
    return [ref for ref in (CHEXNET, CHEXPERT) if ref["dataset"] == dataset]
