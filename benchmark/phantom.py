"""The phantom: a SYNTHETIC chest-radiograph data set written in the CheXpert layout.

Each image is rendered procedurally (thorax, lungs with vessel markings, heart, mediastinum, spine, ribs,
clavicles, diaphragm, soft tissue, exposure and noise), with anatomy varying between patients. Each finding has
its own sign: cardiothoracic ratio above 0.5 (Cardiomegaly), a widened upper mediastinum (Enlarged
Cardiomediastinum), costophrenic blunting with a meniscus (Pleural Effusion), a pleural line with no lung
markings beyond it (Pneumothorax), perihilar haze and Kerley lines (Edema), a lobar opacity with air
bronchograms (Consolidation), patchy opacities (Pneumonia, Lung Opacity), round lesions (Lung Lesion),
plate-like opacities with volume loss (Atelectasis), pleural thickening (Pleural Other), a broken rib (Fracture)
and tubes, lines, leads and a pacemaker (Support Devices). Uncertain labels get a faint or ambiguous sign, a few
labels are wrong (as in any report-mined data set), and labels co-occur at the rates of CheXpert's train.csv.

Nothing here is a real patient: every output made from it must say it is synthetic.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from benchmark.cache import usable_cores
from benchmark.datasets import PHANTOM_MARKER
from benchmark.errors import UserError
from benchmark.label_stats import load_label_stats
from benchmark.labels import CHEXPERT_14

FOLDER = "CheXpert-v1.0-small"
LABEL_NOISE_MISSED = 0.04  # positives whose sign is not drawn
LABEL_NOISE_SPURIOUS = 0.02  # negatives with a faint sign drawn anyway
UNCERTAIN_STRENGTH = (0.2, 0.5)
POSITIVE_STRENGTH = (0.5, 1.0)
IDX = {name: i for i, name in enumerate(CHEXPERT_14)}


# ----------------------------------------------------------------------------------------------- labels
def sample_labels(n: int, rng: np.random.Generator, stats: dict | None = None) -> np.ndarray:
    """Raw CheXpert labels (1, 0, -1, NaN) for n images by a Gaussian copula of the real frequencies and
    correlations. 'No Finding' is set only where no finding other than Support Devices is present."""
    stats = stats or load_label_stats()
    labels = stats["labels"]
    corr = np.asarray(stats["present_correlation"])
    corr = corr + np.eye(len(labels)) * 1e-6
    z = rng.multivariate_normal(np.zeros(len(labels)), corr, size=n, method="cholesky")
    from math import erf, sqrt
    u = 0.5 * (1 + np.vectorize(erf)(z / sqrt(2)))
    out = np.full((n, len(labels)), np.nan, dtype=np.float32)
    for j, label in enumerate(labels):
        f = stats["frequencies"][label]
        pos, unc, neg = f["positive"], f["uncertain"], f["negative"]
        col = out[:, j]
        col[u[:, j] < pos] = 1
        col[(u[:, j] >= pos) & (u[:, j] < pos + unc)] = -1
        col[(u[:, j] >= pos + unc) & (u[:, j] < pos + unc + neg)] = 0
    nf = labels.index("No Finding")
    others = [j for j, x in enumerate(labels) if x not in ("No Finding", "Support Devices")]
    any_finding = ((out[:, others] == 1) | (out[:, others] == -1)).any(axis=1)
    out[:, nf] = np.where(any_finding, np.nan, 1.0)
    # Images without findings are reported as normal about half the time in CheXpert; the rest stay blank.
    out[~any_finding & (rng.random(n) < 0.45), nf] = np.nan
    return out


def truth_from_labels(raw: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """What is really in each image: sign strengths in [0, 1] per label, and labels as a radiologist panel
    would give them (the validation set's labels: no uncertainty, no report-mining errors)."""
    n, L = raw.shape
    strength = np.zeros((n, L), dtype=np.float32)
    pos = raw == 1
    unc = raw == -1
    strength[pos] = rng.uniform(*POSITIVE_STRENGTH, size=int(pos.sum()))
    strength[unc] = rng.uniform(*UNCERTAIN_STRENGTH, size=int(unc.sum()))
    missed = pos & (rng.random((n, L)) < LABEL_NOISE_MISSED)
    strength[missed] = 0.0
    spurious = ~pos & ~unc & (rng.random((n, L)) < LABEL_NOISE_SPURIOUS)
    strength[spurious] = rng.uniform(0.3, 0.6, size=int(spurious.sum()))
    strength[:, IDX["No Finding"]] = 0.0
    panel = (strength >= 0.35).astype(np.float32)
    others = [j for j, x in enumerate(CHEXPERT_14) if x not in ("No Finding", "Support Devices")]
    panel[:, IDX["No Finding"]] = (panel[:, others].sum(axis=1) == 0).astype(np.float32)
    return strength, panel


# ----------------------------------------------------------------------------------------------- drawing
def _smooth_noise(rng, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1] at `size` px from a `cells`-square random grid."""
    grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def _ellipse_mask(shape, cx, cy, rx, ry, angle=0.0) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.ellipse(m, (int(cx), int(cy)), (max(1, int(rx)), max(1, int(ry))), angle, 0, 360, 1, -1)
    return m.astype(np.float32)


def _polyline(img, pts, value, thickness):
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


def _lung_mask(a: Anatomy, side: int, lift: float = 0.0) -> np.ndarray:
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


def render_frontal(strength: np.ndarray, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """A frontal (PA/AP) radiograph as float32 in [0, 1] with the signs given by `strength` (one per label)."""
    a = anatomy
    s = a.s
    st = {name: float(strength[i]) for name, i in IDX.items()}
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    img = np.zeros((s, s), np.float32)

    # soft tissue: neck, shoulders and trunk
    body = _ellipse_mask((s, s), a.cx, a.top + 0.55 * s, a.half_w * 1.18, 0.62 * s)
    body = np.maximum(body, _ellipse_mask((s, s), a.cx, a.top, a.half_w * 0.35, 0.12 * s))
    for side in (-1, 1):  # shoulders
        body = np.maximum(body, _ellipse_mask((s, s), a.cx + side * a.half_w * 0.95, a.top + 0.05 * s,
                                              a.half_w * 0.45, 0.10 * s, side * 15))
    img += a.body * body
    img += 0.12 * body * np.clip((yy - a.diaphragm) / (0.1 * s), 0, 1)  # abdomen below the diaphragm

    # lungs (air), with volume loss lifting one hemidiaphragm in atelectasis
    ate_side = -1 if rng.random() < 0.6 else 1
    lift = st["Atelectasis"] * s * 0.08
    lungs = {side: _lung_mask(a, side, lift if side == ate_side else 0.0) for side in (-1, 1)}
    lung = np.clip(lungs[-1] + lungs[1], 0, 1)
    img -= (a.body - a.lung_air) * lung

    # vessel markings fanning out from the hila; removed where a pneumothorax collapses the lung
    vessels = np.zeros((s, s), np.float32)
    vrng = np.random.default_rng(a.vessel_seed)
    for side in (-1, 1):
        hx, hy = a.cx + side * (a.mediast + 0.04 * s), a.top + 0.40 * (a.diaphragm - a.top) + 0.1 * s
        for _ in range(14):
            ang = vrng.uniform(-1.2, 1.3) * side * -1 + (np.pi if side < 0 else 0)
            length = vrng.uniform(0.12, 0.30) * s
            pts = np.stack([hx + np.cos(ang) * np.linspace(0, length, 6) + vrng.normal(0, 0.01 * s, 6),
                            hy + np.sin(ang) * np.linspace(0, length, 6) * 0.9], 1)
            _polyline(vessels, pts, 0.10, max(1.0, s / 150))

    ptx = st["Pneumothorax"]
    ptx_zone = np.zeros((s, s), np.float32)
    if ptx > 0:
        side = -1 if rng.random() < 0.5 else 1
        depth = (0.03 + 0.12 * ptx) * s
        # the region between the chest wall and a pleural line parallel to it, in the upper and lateral lung
        shrunk = cv2.erode(lungs[side], np.ones((3, 3), np.uint8), iterations=max(1, int(depth)))
        upper = np.clip((a.top + 0.65 * (a.diaphragm - a.top) - yy) / (0.1 * s), 0, 1)
        ptx_zone = np.clip(lungs[side] - shrunk, 0, 1) * upper
        edge = cv2.morphologyEx(shrunk, cv2.MORPH_GRADIENT, np.ones((2, 2), np.uint8)) * upper
        img -= 0.06 * ptx_zone * min(1.0, 0.4 + ptx)
        img += 0.10 * edge * min(1.0, 0.3 + ptx)
    img += vessels * lung * (1 - ptx_zone)

    # mediastinum, widened in Enlarged Cardiomediastinum
    med_w = a.mediast * (1.0 + 0.9 * st["Enlarged Cardiomediastinum"])
    med = ((np.abs(xx - a.cx) < med_w) & (yy > a.top) & (yy < a.diaphragm)).astype(np.float32)
    med = cv2.GaussianBlur(med, (0, 0), s / 120)
    img = np.maximum(img, med * (a.body + 0.08))

    # heart: transverse diameter = cardiothoracic ratio x thoracic width, bulging to the patient's left
    ctr = a.ctr
    if st["Cardiomegaly"] > 0:
        ctr = 0.50 + 0.16 * st["Cardiomegaly"] + rng.normal(0, 0.01)
    heart_w = ctr * 2 * a.half_w
    hcx = a.cx + 0.18 * heart_w
    hcy = a.diaphragm - a.heart_h * 0.55
    heart = _ellipse_mask((s, s), hcx, hcy, heart_w / 2, a.heart_h * (0.9 + 0.3 * (ctr - 0.42)), rng.uniform(-12, 4))
    heart = cv2.GaussianBlur(heart, (0, 0), s / 150)
    img = np.maximum(img, heart * (a.body + 0.10))

    # ribs: posterior arcs, one pair per interspace; a fracture breaks one
    ribs = np.zeros((s, s), np.float32)
    frac_rib = int(rng.integers(3, 8)) if st["Fracture"] > 0 else -1
    frac_side = -1 if rng.random() < 0.5 else 1
    for k in range(10):
        y0 = a.top + 0.04 * s + k * a.rib_gap
        for side in (-1, 1):
            x = a.cx + side * np.linspace(a.mediast * 0.6, a.half_w * 0.98, 14)
            y = y0 + a.rib_tilt * (np.abs(x - a.cx)) * (0.5 + 0.5 * np.linspace(0, 1, 14) ** 2)
            thick = s / 70
            if k == frac_rib and side == frac_side:
                cut = 6 + int(rng.integers(0, 4))
                gap = 1 + int(2 * st["Fracture"])
                _polyline(ribs, np.stack([x[:cut], y[:cut]], 1), 0.11, thick)
                shift = st["Fracture"] * s * 0.012
                _polyline(ribs, np.stack([x[cut + gap:], y[cut + gap:] + shift], 1), 0.11, thick)
            else:
                _polyline(ribs, np.stack([x, y], 1), 0.11, thick)
    img += ribs * body * (0.35 + 0.65 * cv2.GaussianBlur(lung, (0, 0), s / 100))

    # clavicles and spine
    for side in (-1, 1):
        _polyline(img, np.array([[a.cx + side * 0.03 * s, a.top + 0.02 * s],
                                 [a.cx + side * a.half_w * 0.9, a.top - 0.01 * s]]), a.body + 0.15, s / 45)
    img += 0.07 * np.exp(-((xx - a.cx) / (0.025 * s)) ** 2) * body

    # --- findings in the lung fields
    lung_blur = cv2.GaussianBlur(lung, (0, 0), s / 60)

    ed = st["Edema"]
    if ed > 0:  # perihilar (bat-wing) haze and Kerley B lines at the bases
        haze = np.zeros((s, s), np.float32)
        for side in (-1, 1):
            hx = a.cx + side * (a.mediast + 0.07 * s)
            hy = a.top + 0.45 * (a.diaphragm - a.top)
            haze += np.exp(-(((xx - hx) / (0.11 * s)) ** 2 + ((yy - hy) / (0.16 * s)) ** 2))
        haze *= 1 + 0.3 * _smooth_noise(rng, s, 6)
        img += 0.24 * ed * haze * lung_blur
        if ed > 0.5:
            for side in (-1, 1):
                for _ in range(4):
                    y = a.diaphragm - rng.uniform(0.06, 0.16) * s
                    x0 = a.cx + side * a.half_w * 0.9
                    _polyline(img, np.array([[x0, y], [x0 - side * 0.04 * s, y]]), 0.0, 1)
                    img[int(y), int(min(x0, x0 - side * 0.04 * s)):int(max(x0, x0 - side * 0.04 * s))] += 0.05 * ed

    cons = st["Consolidation"]
    if cons > 0:  # a whole lobe (upper or lower, either side), dense and mottled, with dark air bronchograms
        side = -1 if rng.random() < 0.5 else 1
        fissure_y = a.top + rng.uniform(0.4, 0.55) * (a.diaphragm - a.top) + side * 0.2 * (xx - a.cx)
        upper = rng.random() < 0.5
        lobe = lungs[side] * ((yy < fissure_y) if upper else (yy > fissure_y))
        lobe = cv2.GaussianBlur(lobe.astype(np.float32), (0, 0), s / 90)
        tex = 1 + 0.4 * _smooth_noise(rng, s, 14)
        bronch = np.zeros((s, s), np.float32)
        hx, hy = a.cx + side * (a.mediast + 0.02 * s), a.top + 0.45 * (a.diaphragm - a.top)
        for _ in range(4):
            ang = rng.uniform(0.3, 1.2) * (-1 if upper else 1)
            L = rng.uniform(0.12, 0.22) * s
            _polyline(bronch, np.array([[hx, hy], [hx + side * np.cos(ang) * L, hy + np.sin(ang) * L]]), 1.0, s / 110)
        img += (0.34 * cons * tex - 0.14 * cons * bronch) * lobe

    def patches(amount, count, radius, side=None):
        out = np.zeros((s, s), np.float32)
        for _ in range(count):
            sd = side if side is not None else (-1 if rng.random() < 0.5 else 1)
            px = a.cx + sd * rng.uniform(a.mediast + 0.05 * s, a.half_w * 0.8)
            py = rng.uniform(a.top + 0.2 * s, a.diaphragm - 0.05 * s)
            r = radius * rng.uniform(0.7, 1.3)
            out += np.exp(-(((xx - px) / r) ** 2 + ((yy - py) / (r * rng.uniform(0.7, 1.3))) ** 2))
        return amount * out * (1 + 0.35 * _smooth_noise(rng, s, 12)) * lung_blur

    if st["Pneumonia"] > 0:
        img += patches(0.20 * st["Pneumonia"], int(rng.integers(2, 4)), 0.06 * s,
                       side=-1 if rng.random() < 0.5 else 1)
    opacity_explained = max(ed, cons, st["Pneumonia"], st["Atelectasis"], st["Lung Lesion"])
    if st["Lung Opacity"] > 0 and opacity_explained < 0.3:
        img += patches(0.16 * st["Lung Opacity"], int(rng.integers(1, 3)), 0.07 * s)

    les = st["Lung Lesion"]
    if les > 0:  # round, sharply marginated nodules or a mass
        for _ in range(int(rng.integers(1, 3))):
            sd = -1 if rng.random() < 0.5 else 1
            px = a.cx + sd * rng.uniform(a.mediast + 0.06 * s, a.half_w * 0.75)
            py = rng.uniform(a.top + 0.15 * s, a.diaphragm - 0.12 * s)
            r = rng.uniform(0.015, 0.045) * s * (0.6 + les)
            img += (0.12 + 0.18 * les) * cv2.GaussianBlur(_ellipse_mask((s, s), px, py, r, r), (0, 0), 0.6) * lung

    ate = st["Atelectasis"]
    if ate > 0:  # plate-like (discoid) opacities in the mid zone, volume loss: raised hemidiaphragm, shifted mediastinum
        for _ in range(int(rng.integers(2, 4))):
            y = a.top + rng.uniform(0.5, 0.72) * (a.diaphragm - a.top)
            x0 = a.cx + ate_side * rng.uniform(a.mediast + 0.03 * s, 0.12 * s)
            x1 = x0 + ate_side * rng.uniform(0.12, 0.2) * s
            band = np.zeros((s, s), np.float32)
            _polyline(band, np.array([[x0, y], [x1, y + rng.uniform(-0.04, 0.02) * s]]), 1.0, s / 38)
            img += 0.32 * ate * cv2.GaussianBlur(band, (0, 0), s / 160) * lungs[ate_side]
        shift = int(round(ate_side * ate * 0.03 * s))
        img = np.where(np.abs(xx - a.cx) < 1.6 * a.mediast, np.roll(img, shift, axis=1), img)

    eff = st["Pleural Effusion"]
    if eff > 0:  # fluid in the dependent costophrenic recess with a meniscus rising laterally
        sides = [-1, 1] if rng.random() < 0.4 else [-1 if rng.random() < 0.5 else 1]
        for side in sides:
            height = (0.03 + 0.22 * eff) * (a.diaphragm - a.top)
            level = a.diaphragm - height
            lateral = np.clip((xx - a.cx) * side / a.half_w, 0, 1)
            below = (yy > level - 0.10 * s * lateral ** 2 * (0.5 + eff)).astype(np.float32)
            fluid = cv2.GaussianBlur(lungs[side] * below, (0, 0), s / 80)
            img = img * (1 - fluid) + fluid * (a.body + 0.06)

    po = st["Pleural Other"]
    if po > 0:  # pleural thickening along the lateral chest wall
        side = -1 if rng.random() < 0.5 else 1
        wall = lungs[side] - cv2.erode(lungs[side], np.ones((3, 3), np.uint8), iterations=max(1, int((0.008 + 0.015 * po) * s)))
        wall *= (yy > a.top + 0.2 * s)
        img += 0.18 * po * cv2.GaussianBlur(wall, (0, 0), 0.8)

    sd_ = st["Support Devices"]
    if sd_ > 0:  # endotracheal tube, lines, ECG leads, pacemaker
        dev = np.zeros((s, s), np.float32)
        kinds = rng.permutation(4)[: 1 + int(rng.integers(0, 3))]
        for kind in kinds:
            if kind == 0:
                _polyline(dev, np.array([[a.cx, 0], [a.cx + 0.005 * s, a.top + 0.12 * s]]), 1, s / 90)
            elif kind == 1:
                pts = np.array([[a.cx - 0.25 * s, a.top], [a.cx - 0.1 * s, a.top + 0.06 * s], [a.cx + 0.01 * s, a.top + 0.25 * s]])
                _polyline(dev, pts, 1, s / 150)
            elif kind == 2:
                for _ in range(3):
                    px, py = a.cx + rng.uniform(-0.35, 0.35) * s, rng.uniform(0.15, 0.7) * s
                    cv2.circle(dev, (int(px), int(py)), max(2, int(0.018 * s)), 1.0, -1, cv2.LINE_AA)
                    _polyline(dev, np.array([[px, py], [px + rng.uniform(-0.2, 0.2) * s, s]]), 0.8, 1)
            else:
                px, py = a.cx + 0.22 * s, a.top + 0.06 * s
                cv2.rectangle(dev, (int(px), int(py)), (int(px + 0.07 * s), int(py + 0.05 * s)), 1.0, -1)
                _polyline(dev, np.array([[px, py + 0.03 * s], [a.cx + 0.1 * s, hcy]]), 1, s / 150)
        img = np.maximum(img, dev * (0.55 + 0.45 * sd_))
    return img


def render_lateral(strength: np.ndarray, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """A lateral view: the thorax in profile, the heart anteriorly, the spine posteriorly."""
    a = anatomy
    s = a.s
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    st = {name: float(strength[i]) for name, i in IDX.items()}
    body = _ellipse_mask((s, s), a.cx, a.top + 0.5 * s, 0.36 * s, 0.6 * s)
    img = a.body * body
    lung = _ellipse_mask((s, s), a.cx + 0.02 * s, a.top + 0.37 * s, 0.27 * s, 0.31 * s)
    img -= (a.body - a.lung_air) * lung
    hw = 0.12 * s * (1 + 0.5 * st["Cardiomegaly"])
    img = np.maximum(img, _ellipse_mask((s, s), a.cx - 0.12 * s, a.diaphragm - 0.12 * s, hw, 0.13 * s) * (a.body + 0.1))
    img += 0.12 * ((xx > a.cx + 0.22 * s) & (xx < a.cx + 0.3 * s)).astype(np.float32) * body
    if st["Pleural Effusion"] > 0:
        fluid = lung * (yy > a.diaphragm - 0.05 * s - 0.12 * s * st["Pleural Effusion"]) * (xx > a.cx)
        img = img * (1 - fluid) + fluid * (a.body + 0.05)
    if st["Support Devices"] > 0:
        _polyline(img, np.array([[a.cx - 0.2 * s, 0], [a.cx - 0.05 * s, 0.4 * s]]), 0.9, s / 120)
    return img


def expose(img: np.ndarray, rng: np.random.Generator, projection: str) -> np.ndarray:
    """Exposure, scatter, blur and quantum noise, then 8-bit."""
    s = img.shape[0]
    gamma = rng.uniform(0.8, 1.25)
    img = np.clip(img, 0, None)
    img = cv2.GaussianBlur(img, (0, 0), s / 256 * rng.uniform(0.6, 1.2))
    if projection == "AP":  # portable films: lower contrast, more scatter
        img = 0.85 * img + 0.06
    img = img + 0.05 * _smooth_noise(rng, s, 4)
    img = np.clip(img, 0, 1) ** gamma
    img = img * rng.uniform(0.85, 1.1) + rng.normal(0, rng.uniform(0.012, 0.03), img.shape).astype(np.float32)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- writing
def _plan(n: int, seed: int, stats: dict) -> list[dict]:
    """Patients, studies and views for n images, in the proportions of CheXpert."""
    rng = np.random.default_rng(seed)
    rows = []
    patient = 0
    while len(rows) < n:
        patient += 1
        studies = 1 + min(int(rng.geometric(1 / 1.9)) - 1, 6)
        age = int(np.clip(rng.normal(stats["age_mean"], stats["age_sd"]), 18, 90))
        sex = "Female" if rng.random() < stats["female_share"] else "Male"
        for study in range(1, studies + 1):
            views = ["frontal"] + (["lateral"] if rng.random() < stats["lateral_share"] / (1 - stats["lateral_share"]) else [])
            for v, view in enumerate(views, 1):
                rows.append({"patient": patient, "study": study, "view": view, "index": v, "age": age, "sex": sex,
                             "projection": ("AP" if rng.random() < stats["ap_share"] else "PA") if view == "frontal" else ""})
    return rows[:n]


def _render_chunk(args) -> list[tuple[str, bytes]]:
    root, size, seed, items = args
    out = []
    for item in items:
        rng = np.random.default_rng([seed, item["patient"], item["study"], item["index"]])
        anatomy = Anatomy(np.random.default_rng([seed, item["patient"]]), size)
        strength = np.asarray(item["strength"], np.float32)
        if item["view"] == "frontal":
            img = render_frontal(strength, anatomy, rng)
        else:
            img = render_lateral(strength, anatomy, rng)
        ok, buf = cv2.imencode(".jpg", expose(img, rng, item["projection"] or "PA"), [cv2.IMWRITE_JPEG_QUALITY, 92])
        out.append((item["path"], buf.tobytes()))
    return out


def make_phantom(out: str | os.PathLike, n: int = 2000, size: int = 128, seed: int = 0, valid_share: float = 0.1,
                 workers: int | None = None) -> dict:
    """Write the phantom: OUT/CheXpert-v1.0-small/{train,valid}/patient*/study*/view*_{frontal,lateral}.jpg with
    train.csv and valid.csv in CheXpert's format. The valid set's labels are the panel's (no uncertainty)."""
    import pandas as pd

    if n < 20:
        raise UserError(f"make-phantom --n {n}: use at least 20 images")
    if size < 32:
        raise UserError(f"make-phantom --size {size}: use at least 32 px")
    start = time.perf_counter()
    stats = load_label_stats()
    root = Path(out) / FOLDER
    tmp = Path(out) / (FOLDER + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    plan = _plan(n, seed, stats)
    rng = np.random.default_rng(seed + 1)
    # one set of labels per study: frontal and lateral views of a study share their findings
    study_keys = sorted({(r["patient"], r["study"]) for r in plan})
    raw = sample_labels(len(study_keys), rng, stats)
    strength, panel = truth_from_labels(raw, rng)
    by_study = {k: i for i, k in enumerate(study_keys)}
    patients = sorted({r["patient"] for r in plan})
    n_valid = max(2, int(round(valid_share * len(patients))))
    valid_patients = set(patients[-n_valid:])
    rows = {"train": [], "valid": []}
    for r in plan:
        part = "valid" if r["patient"] in valid_patients else "train"
        r["path"] = f"{FOLDER}/{part}/patient{r['patient']:05d}/study{r['study']}/view{r['index']}_{r['view']}.jpg"
        i = by_study[(r["patient"], r["study"])]
        r["strength"] = strength[i].tolist()
        labels = panel[i] if part == "valid" else raw[i]
        rows[part].append({"Path": r["path"], "Sex": r["sex"], "Age": r["age"],
                           "Frontal/Lateral": r["view"].capitalize(), "AP/PA": r["projection"],
                           **{name: labels[j] for j, name in enumerate(CHEXPERT_14)}})
    workers = workers or usable_cores()
    chunks = [plan[i:i + 64] for i in range(0, len(plan), 64)]
    jobs = [(str(tmp), size, seed, c) for c in chunks]
    made_dirs = set()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(_render_chunk, jobs):
            for path, data in result:
                target = tmp / path.split("/", 1)[1]
                if target.parent not in made_dirs:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    made_dirs.add(target.parent)
                target.write_bytes(data)
    for part, part_rows in rows.items():
        frame = pd.DataFrame(part_rows)
        frame.to_csv(tmp / f"{part}.csv", index=False, float_format="%.1f")
    (tmp / PHANTOM_MARKER).write_text(
        "SYNTHETIC DATA. This folder is the cxr-bench phantom: procedurally rendered images that imitate chest "
        f"radiographs, with labels sampled at CheXpert's rates. Not real patients. n={n} size={size} seed={seed}\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    seconds = time.perf_counter() - start
    return {"root": str(root), "images": len(plan), "patients": len(patients), "seconds": seconds,
            "images_per_s": len(plan) / seconds}


def phantom_is_complete(root: str | os.PathLike) -> bool:
    root = Path(root)
    return (root / PHANTOM_MARKER).is_file() and (root / "train.csv").is_file() and (root / "valid.csv").is_file()
