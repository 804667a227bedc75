"""cxr-bench: train and compare chest-radiograph classifiers on CheXpert, NIH ChestX-ray14 and CSV data."""

__version__ = "0.1.0"
