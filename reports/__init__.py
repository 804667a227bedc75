"""Metrics, comparisons, plots, Grad-CAM and the HTML report. Only gradcam.py needs TensorFlow."""
