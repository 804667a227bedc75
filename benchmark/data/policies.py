"""Uncertainty policies: how CheXpert's -1 (uncertain) and blank labels become training targets.

Targets are float32 with NaN where a label is ignored (masked out of the loss and of the metrics).
Evaluation targets never guess: uncertain is always ignored there, so every policy is scored on the same labels.
"""

from __future__ import annotations

import numpy as np

from benchmark.errors import UserError

# The choice of the strongest CheXpert systems: U-Ones where uncertainty usually means the finding is there.
MIXED_ONES = ("Atelectasis", "Edema")
SMOOTH_ONES_RANGE = (0.55, 0.85)
SMOOTH_ZEROS_RANGE = (0.0, 0.30)

POLICIES = ("ignore", "zeros", "ones", "mixed", "smooth_ones", "smooth_zeros")


def resolve_policies(policy, labels) -> dict[str, str]:
    """One policy per label from a single name or a {label: policy} mapping (labels not named get 'mixed')."""
    if isinstance(policy, dict):
        unknown = [k for k in policy if k not in labels]
        if unknown:
            raise UserError(f"policy names label(s) {', '.join(map(repr, unknown))} that are not trained; "
                            f"labels are: {', '.join(labels)}")
        per_label = {label: policy.get(label, "mixed") for label in labels}
    else:
        per_label = {label: policy for label in labels}
    for label, p in per_label.items():
        if p not in POLICIES:
            raise UserError(f"policy {p!r} for {label!r} is not one of {', '.join(POLICIES)}")
        if p == "mixed":
            per_label[label] = "ones" if label in MIXED_ONES else "zeros"
    return per_label


def training_targets(raw: np.ndarray, labels, policy, blank: str = "negative", seed: int = 0) -> np.ndarray:
    """Map raw labels (1, 0, -1, NaN for blank) of shape (N, L) to training targets with NaN = ignored."""
    raw = np.asarray(raw, dtype=np.float32)
    per_label = resolve_policies(policy, labels)
    out = raw.copy()
    rng = np.random.default_rng(seed)
    blank_value = 0.0 if blank == "negative" else np.nan
    for j, label in enumerate(labels):
        col = raw[:, j]
        uncertain = col == -1
        target = out[:, j]
        target[np.isnan(col)] = blank_value
        p = per_label[label]
        if p == "ignore":
            target[uncertain] = np.nan
        elif p == "zeros":
            target[uncertain] = 0.0
        elif p == "ones":
            target[uncertain] = 1.0
        elif p == "smooth_ones":
            target[uncertain] = rng.uniform(*SMOOTH_ONES_RANGE, size=int(uncertain.sum()))
        elif p == "smooth_zeros":
            target[uncertain] = rng.uniform(*SMOOTH_ZEROS_RANGE, size=int(uncertain.sum()))
    return out


def evaluation_targets(raw: np.ndarray, blank: str = "negative") -> np.ndarray:
    """Targets for metrics: 1 and 0 as given, uncertain ignored (NaN), blank negative or ignored."""
    raw = np.asarray(raw, dtype=np.float32)
    out = raw.copy()
    out[raw == -1] = np.nan
    out[np.isnan(raw)] = 0.0 if blank == "negative" else np.nan
    return out
