"""A patient's anatomy and the drawing primitives the phantom's renderers share (OpenCV and numpy)."""

from __future__ import annotations

import cv2
import numpy as np


def smooth_noise(rng, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1] at `size` px from a `cells`-square random grid."""
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def ellipse_mask(shape, cx, cy, rx, ry, angle=0.0) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.ellipse(m, (int(cx), int(cy)), (max(1, int(rx)), max(1, int(ry))), angle, 0, 360, 1, -1)
    return m.astype(np.float32)


def polyline(img, pts, value, thickness):
    cv2.polylines(img, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], False, float(value),
                  max(1, int(round(thickness))), cv2.LINE_AA)


class Anatomy:
    """One patient's anatomy, in pixels, with small variation from study to study."""

    def __init__(self, rng: np.random.Generator, s: int):
        self.s = s
        self.cx = s * rng.uniform(0.47, 0.53)
        self.top = s * rng.uniform(0.08, 0.15)
        self.half_w = s * rng.uniform(0.33, 0.42)
        self.diaphragm = s * rng.uniform(0.72, 0.84)
        self.dome = s * rng.uniform(0.04, 0.08)
        self.ctr = rng.uniform(0.38, 0.47)  # normal cardiothoracic ratio
        self.heart_h = s * rng.uniform(0.17, 0.23)
        self.mediast = s * rng.uniform(0.055, 0.075)
        self.rib_gap = (self.diaphragm - self.top) / rng.uniform(8.5, 10.5)
        self.rib_tilt = rng.uniform(0.25, 0.45)
        self.body = rng.uniform(0.40, 0.52)
        self.lung_air = rng.uniform(0.10, 0.20)
        self.vessel_seed = int(rng.integers(1 << 30))


def lung_mask(a: Anatomy, side: int, lift: float = 0.0) -> np.ndarray:
    """Side -1 is the patient's right lung (image left), +1 the left lung (image right)."""
    s = a.s
    m = np.zeros((s, s), np.uint8)
    inner = a.cx + side * a.mediast
    outer = a.cx + side * a.half_w * 0.93
    bottom = a.diaphragm - (a.s * 0.02 if side < 0 else 0) - lift
    n = 24
    t = np.linspace(0, 1, n)
    # lateral edge: from apex curving out to the costophrenic angle
    lat_x = inner + (outer - inner) * np.sin(t * np.pi / 2) ** 0.6
    lat_y = a.top + s * 0.03 + (bottom - a.top - s * 0.03) * t
    # diaphragm dome from the costophrenic angle back to the medial side
    dome_x = np.linspace(outer, inner, n)
    dome_y = bottom - a.dome * np.sin(np.linspace(0, np.pi, n)) - (a.dome * 0.6) * np.linspace(0, 1, n)
    pts = np.stack([np.concatenate([[inner], lat_x, dome_x]), np.concatenate([[a.top + s * 0.05], lat_y, dome_y])], 1)
    cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1, cv2.LINE_AA)
    return m.astype(np.float32)
