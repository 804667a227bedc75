"""Evaluation: inference, metrics, scoring units, statistics, comparisons, subgroups, Grad-CAM, external sets,
model cards, export."""
