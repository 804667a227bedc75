"""The network a configuration asks for: `models/` builds networks from explicit arguments and knows nothing of
`Config`; this is the one place that reads the configuration's model keys."""

from __future__ import annotations

from benchmark.config import weights_for


def classifier_for(cfg, n_labels: int):
    """`models.classifier.build_classifier` with the backbone, weights, head and augmentation keys of `cfg`."""
    from models.classifier import Augment, build_classifier

    augment = (Augment(cfg.rotation, cfg.shift, cfg.zoom, cfg.brightness, cfg.contrast, cfg.hflip, int(cfg.seed))
               if cfg.augment else None)
    return build_classifier(cfg.backbone, cfg.image_size, n_labels, weights_for(cfg), cfg.weights_dir,
                            cfg.bn_momentum, cfg.dropout, cfg.head_hidden, cfg.per_label_heads, augment)
