"""Backbones, heads and the classifier that joins them. `models.registry` imports no TensorFlow."""
