"""Label lists of the supported data sets and the named label sets a config can select."""

CHEXPERT_14 = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)

# The order of Table 2 of the CheXNet paper (Rajpurkar et al. 2017).
NIH_14 = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)

# The five observations of the CheXpert competition (Irvin et al. 2019).
COMPETITION_5 = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

# One label space across data sets: a label's name in the data set's own file -> its name here. Only labels that
# mean the same finding are mapped (NIH's Mass and Nodule are not CheXpert's Lung Lesion, nor Infiltration its
# Lung Opacity), so external validation scores only what both data sets really share.
CANONICAL = {
    "Effusion": "Pleural Effusion",  # NIH ChestX-ray14
    "Pleural_Thickening": "Pleural Thickening",  # NIH ChestX-ray14
}


def canonical(label: str) -> str:
    """The label's name in the one label space (CheXpert's names where CheXpert has the finding)."""
    return CANONICAL.get(label, label.replace("_", " "))


def shared_labels(trained, available) -> dict:
    """{a trained label: the available label of the same finding} for the labels both share, in trained order."""
    by_name = {canonical(lab): lab for lab in available}
    return {lab: by_name[canonical(lab)] for lab in trained if canonical(lab) in by_name}


LABEL_SETS = {
    "chexpert14": CHEXPERT_14,
    "competition5": COMPETITION_5,
    "nih14": NIH_14,
}


def resolve_label_set(labels, available=None):
    """Turn a label-set name or an explicit list into a tuple of label names.

    `labels` may be a name from LABEL_SETS, "all" (every label of the data set, needs `available`), or a list.
    """
    from benchmark.errors import UserError

    if isinstance(labels, str):
        if labels == "all":
            if available is None:
                raise UserError("labels=all needs a data set to take the labels from")
            return tuple(available)
        if labels not in LABEL_SETS:
            raise UserError(f"unknown label set {labels!r}; use one of {', '.join(LABEL_SETS)}, 'all' or a list")
        chosen = LABEL_SETS[labels]
    else:
        chosen = tuple(str(x) for x in labels)
    if not chosen:
        raise UserError("the label list is empty")
    if available is not None:
        missing = [x for x in chosen if x not in available]
        if missing:
            raise UserError(
                f"label(s) {', '.join(map(repr, missing))} are not in this data set; it has: {', '.join(available)}"
            )
    return tuple(chosen)
