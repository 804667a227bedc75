"""The lateral view, and the exposure that turns a drawn view into an 8-bit radiograph."""

from __future__ import annotations

import cv2
import numpy as np

from benchmark.phantom.anatomy import Anatomy, ellipse_mask, polyline, smooth_noise
from benchmark.phantom.frontal import render_frontal
from benchmark.phantom.labels import IDX

__all__ = ["render_frontal", "render_lateral", "expose"]


def render_lateral(strength: np.ndarray, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """A lateral view: the thorax in profile, the heart anteriorly, the spine posteriorly."""
    a = anatomy
    s = a.s
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    st = {name: float(strength[i]) for name, i in IDX.items()}
    body = ellipse_mask((s, s), a.cx, a.top + 0.5 * s, 0.36 * s, 0.6 * s)
    img = a.body * body
    lung = ellipse_mask((s, s), a.cx + 0.02 * s, a.top + 0.37 * s, 0.27 * s, 0.31 * s)
    img -= (a.body - a.lung_air) * lung
    hw = 0.12 * s * (1 + 0.5 * st["Cardiomegaly"])
    img = np.maximum(img, ellipse_mask((s, s), a.cx - 0.12 * s, a.diaphragm - 0.12 * s, hw, 0.13 * s) * (a.body + 0.1))
    img += 0.12 * ((xx > a.cx + 0.22 * s) & (xx < a.cx + 0.3 * s)).astype(np.float32) * body
    if st["Pleural Effusion"] > 0:
        fluid = lung * (yy > a.diaphragm - 0.05 * s - 0.12 * s * st["Pleural Effusion"]) * (xx > a.cx)
        img = img * (1 - fluid) + fluid * (a.body + 0.05)
    if st["Support Devices"] > 0:
        polyline(img, np.array([[a.cx - 0.2 * s, 0], [a.cx - 0.05 * s, 0.4 * s]]), 0.9, s / 120)
    return img


def expose(img: np.ndarray, rng: np.random.Generator, projection: str) -> np.ndarray:
    """Exposure, scatter, blur and quantum noise, then 8-bit."""
    s = img.shape[0]
    gamma = rng.uniform(0.8, 1.25)
    img = np.clip(img, 0, None)
    img = cv2.GaussianBlur(img, (0, 0), s / 256 * rng.uniform(0.6, 1.2))
    if projection == "AP":  # portable films: lower contrast, more scatter
        img = 0.85 * img + 0.06
    img = img + 0.05 * smooth_noise(rng, s, 4)
    img = np.clip(img, 0, 1) ** gamma
    img = img * rng.uniform(0.85, 1.1) + rng.normal(0, rng.uniform(0.012, 0.03), img.shape).astype(np.float32)
    return np.clip(img * 255, 0, 255).astype(np.uint8)
