"""The frontal (PA/AP) view, drawn as a sequence of small steps: anatomy first, then one step per finding.

Each step takes the `Scene` and draws into `scene.img` (float32, 0 = air, higher = denser). The order of
`FRONTAL_STEPS` is the order of the drawing and of the random draws, so it fixes every image for a seed: add a new
finding at the end (see docs/phantom.md), or every phantom changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from benchmark.phantom.anatomy import Anatomy, ellipse_mask, lung_mask, polyline, smooth_noise
from benchmark.phantom.labels import IDX


@dataclass
class Scene:
    """One image being drawn: the patient's anatomy, the sign strength of each label, and the layers that later
    steps read (the lung masks, the collapsed zone of a pneumothorax, the heart's centre)."""

    a: Anatomy
    st: dict  # label -> sign strength in [0, 1]
    rng: np.random.Generator
    yy: np.ndarray = field(init=False)
    xx: np.ndarray = field(init=False)
    img: np.ndarray = field(init=False)
    body: np.ndarray | None = None
    lungs: dict | None = None  # side (-1 right, +1 left) -> mask
    lung: np.ndarray | None = None
    lung_blur: np.ndarray | None = None
    vessels: np.ndarray | None = None
    collapsed: np.ndarray | None = None  # where a pneumothorax has no lung markings
    atelectasis_side: int = -1
    heart_cy: float = 0.0

    def __post_init__(self):
        s = self.a.s
        self.yy, self.xx = np.mgrid[0:s, 0:s].astype(np.float32)
        self.img = np.zeros((s, s), np.float32)
        self.collapsed = np.zeros((s, s), np.float32)

    @property
    def s(self) -> int:
        return self.a.s


# ----------------------------------------------------------------------------------------------- anatomy
def soft_tissue(sc: Scene) -> None:
    """Neck, shoulders and trunk; the abdomen below the diaphragm."""
    a, s, yy = sc.a, sc.s, sc.yy
    body = ellipse_mask((s, s), a.cx, a.top + 0.55 * s, a.half_w * 1.18, 0.62 * s)
    body = np.maximum(body, ellipse_mask((s, s), a.cx, a.top, a.half_w * 0.35, 0.12 * s))
    for side in (-1, 1):  # shoulders
        body = np.maximum(body, ellipse_mask((s, s), a.cx + side * a.half_w * 0.95, a.top + 0.05 * s,
                                             a.half_w * 0.45, 0.10 * s, side * 15))
    sc.body = body
    sc.img += a.body * body
    sc.img += 0.12 * body * np.clip((yy - a.diaphragm) / (0.1 * s), 0, 1)


def lungs(sc: Scene) -> None:
    """The lungs (air). Atelectasis's volume loss lifts one hemidiaphragm, chosen here."""
    a, s = sc.a, sc.s
    sc.atelectasis_side = -1 if sc.rng.random() < 0.6 else 1
    lift = sc.st["Atelectasis"] * s * 0.08
    sc.lungs = {side: lung_mask(a, side, lift if side == sc.atelectasis_side else 0.0) for side in (-1, 1)}
    sc.lung = np.clip(sc.lungs[-1] + sc.lungs[1], 0, 1)
    sc.img -= (a.body - a.lung_air) * sc.lung


def vessel_markings(sc: Scene) -> None:
    """Vessels fanning out from the hila (added to the image by `add_vessels`, after a pneumothorax)."""
    a, s = sc.a, sc.s
    vessels = np.zeros((s, s), np.float32)
    vrng = np.random.default_rng(a.vessel_seed)
    for side in (-1, 1):
        hx, hy = a.cx + side * (a.mediast + 0.04 * s), a.top + 0.40 * (a.diaphragm - a.top) + 0.1 * s
        for _ in range(14):
            ang = vrng.uniform(-1.2, 1.3) * side * -1 + (np.pi if side < 0 else 0)
            length = vrng.uniform(0.12, 0.30) * s
            pts = np.stack([hx + np.cos(ang) * np.linspace(0, length, 6) + vrng.normal(0, 0.01 * s, 6),
                            hy + np.sin(ang) * np.linspace(0, length, 6) * 0.9], 1)
            polyline(vessels, pts, 0.10, max(1.0, s / 150))
    sc.vessels = vessels


def pneumothorax(sc: Scene) -> None:
    """A pleural line parallel to the chest wall, with no lung markings beyond it (upper and lateral lung)."""
    ptx = sc.st["Pneumothorax"]
    if ptx <= 0:
        return
    a, s, yy = sc.a, sc.s, sc.yy
    side = -1 if sc.rng.random() < 0.5 else 1
    depth = (0.03 + 0.12 * ptx) * s
    shrunk = cv2.erode(sc.lungs[side], np.ones((3, 3), np.uint8), iterations=max(1, int(depth)))
    upper = np.clip((a.top + 0.65 * (a.diaphragm - a.top) - yy) / (0.1 * s), 0, 1)
    sc.collapsed = np.clip(sc.lungs[side] - shrunk, 0, 1) * upper
    edge = cv2.morphologyEx(shrunk, cv2.MORPH_GRADIENT, np.ones((2, 2), np.uint8)) * upper
    sc.img -= 0.06 * sc.collapsed * min(1.0, 0.4 + ptx)
    sc.img += 0.10 * edge * min(1.0, 0.3 + ptx)


def add_vessels(sc: Scene) -> None:
    sc.img += sc.vessels * sc.lung * (1 - sc.collapsed)


def mediastinum(sc: Scene) -> None:
    """The mediastinum, widened in Enlarged Cardiomediastinum."""
    a, s = sc.a, sc.s
    med_w = a.mediast * (1.0 + 0.9 * sc.st["Enlarged Cardiomediastinum"])
    med = ((np.abs(sc.xx - a.cx) < med_w) & (sc.yy > a.top) & (sc.yy < a.diaphragm)).astype(np.float32)
    med = cv2.GaussianBlur(med, (0, 0), s / 120)
    sc.img = np.maximum(sc.img, med * (a.body + 0.08))


def heart(sc: Scene) -> None:
    """Transverse diameter = cardiothoracic ratio x thoracic width, bulging to the patient's left; above 0.5 in
    Cardiomegaly."""
    a, s, rng = sc.a, sc.s, sc.rng
    ctr = a.ctr
    if sc.st["Cardiomegaly"] > 0:
        ctr = 0.50 + 0.16 * sc.st["Cardiomegaly"] + rng.normal(0, 0.01)
    heart_w = ctr * 2 * a.half_w
    hcx = a.cx + 0.18 * heart_w
    sc.heart_cy = a.diaphragm - a.heart_h * 0.55
    mask = ellipse_mask((s, s), hcx, sc.heart_cy, heart_w / 2, a.heart_h * (0.9 + 0.3 * (ctr - 0.42)),
                        rng.uniform(-12, 4))
    mask = cv2.GaussianBlur(mask, (0, 0), s / 150)
    sc.img = np.maximum(sc.img, mask * (a.body + 0.10))


def ribs(sc: Scene) -> None:
    """Posterior rib arcs, one pair per interspace; a Fracture breaks one and offsets its fragment."""
    a, s, rng = sc.a, sc.s, sc.rng
    fracture = sc.st["Fracture"]
    out = np.zeros((s, s), np.float32)
    frac_rib = int(rng.integers(3, 8)) if fracture > 0 else -1
    frac_side = -1 if rng.random() < 0.5 else 1
    for k in range(10):
        y0 = a.top + 0.04 * s + k * a.rib_gap
        for side in (-1, 1):
            x = a.cx + side * np.linspace(a.mediast * 0.6, a.half_w * 0.98, 14)
            y = y0 + a.rib_tilt * (np.abs(x - a.cx)) * (0.5 + 0.5 * np.linspace(0, 1, 14) ** 2)
            thick = s / 70
            if k == frac_rib and side == frac_side:
                cut = 6 + int(rng.integers(0, 4))
                gap = 1 + int(2 * fracture)
                polyline(out, np.stack([x[:cut], y[:cut]], 1), 0.11, thick)
                shift = fracture * s * 0.012
                polyline(out, np.stack([x[cut + gap:], y[cut + gap:] + shift], 1), 0.11, thick)
            else:
                polyline(out, np.stack([x, y], 1), 0.11, thick)
    sc.img += out * sc.body * (0.35 + 0.65 * cv2.GaussianBlur(sc.lung, (0, 0), s / 100))


def clavicles_and_spine(sc: Scene) -> None:
    a, s = sc.a, sc.s
    for side in (-1, 1):
        polyline(sc.img, np.array([[a.cx + side * 0.03 * s, a.top + 0.02 * s],
                                   [a.cx + side * a.half_w * 0.9, a.top - 0.01 * s]]), a.body + 0.15, s / 45)
    sc.img += 0.07 * np.exp(-((sc.xx - a.cx) / (0.025 * s)) ** 2) * sc.body
    sc.lung_blur = cv2.GaussianBlur(sc.lung, (0, 0), s / 60)  # where the findings in the lung fields are seen


# ----------------------------------------------------------------------------------------------- findings
def edema(sc: Scene) -> None:
    """Perihilar (bat-wing) haze, and Kerley B lines at the bases when marked."""
    ed = sc.st["Edema"]
    if ed <= 0:
        return
    a, s, rng, xx, yy = sc.a, sc.s, sc.rng, sc.xx, sc.yy
    haze = np.zeros((s, s), np.float32)
    for side in (-1, 1):
        hx = a.cx + side * (a.mediast + 0.07 * s)
        hy = a.top + 0.45 * (a.diaphragm - a.top)
        haze += np.exp(-(((xx - hx) / (0.11 * s)) ** 2 + ((yy - hy) / (0.16 * s)) ** 2))
    haze *= 1 + 0.3 * smooth_noise(rng, s, 6)
    sc.img += 0.24 * ed * haze * sc.lung_blur
    if ed > 0.5:
        for side in (-1, 1):
            for _ in range(4):
                y = a.diaphragm - rng.uniform(0.06, 0.16) * s
                x0 = a.cx + side * a.half_w * 0.9
                polyline(sc.img, np.array([[x0, y], [x0 - side * 0.04 * s, y]]), 0.0, 1)
                sc.img[int(y), int(min(x0, x0 - side * 0.04 * s)):int(max(x0, x0 - side * 0.04 * s))] += 0.05 * ed


def consolidation(sc: Scene) -> None:
    """A whole lobe (upper or lower, either side), dense and mottled, with dark air bronchograms."""
    cons = sc.st["Consolidation"]
    if cons <= 0:
        return
    a, s, rng, xx, yy = sc.a, sc.s, sc.rng, sc.xx, sc.yy
    side = -1 if rng.random() < 0.5 else 1
    fissure_y = a.top + rng.uniform(0.4, 0.55) * (a.diaphragm - a.top) + side * 0.2 * (xx - a.cx)
    upper = rng.random() < 0.5
    lobe = sc.lungs[side] * ((yy < fissure_y) if upper else (yy > fissure_y))
    lobe = cv2.GaussianBlur(lobe.astype(np.float32), (0, 0), s / 90)
    tex = 1 + 0.4 * smooth_noise(rng, s, 14)
    bronch = np.zeros((s, s), np.float32)
    hx, hy = a.cx + side * (a.mediast + 0.02 * s), a.top + 0.45 * (a.diaphragm - a.top)
    for _ in range(4):
        ang = rng.uniform(0.3, 1.2) * (-1 if upper else 1)
        length = rng.uniform(0.12, 0.22) * s
        polyline(bronch, np.array([[hx, hy], [hx + side * np.cos(ang) * length, hy + np.sin(ang) * length]]), 1.0,
                 s / 110)
    sc.img += (0.34 * cons * tex - 0.14 * cons * bronch) * lobe


def _patches(sc: Scene, amount: float, count: int, radius: float, side=None) -> np.ndarray:
    """Soft, mottled round opacities in the lung fields (one side, or either)."""
    a, s, rng, xx, yy = sc.a, sc.s, sc.rng, sc.xx, sc.yy
    out = np.zeros((s, s), np.float32)
    for _ in range(count):
        sd = side if side is not None else (-1 if rng.random() < 0.5 else 1)
        px = a.cx + sd * rng.uniform(a.mediast + 0.05 * s, a.half_w * 0.8)
        py = rng.uniform(a.top + 0.2 * s, a.diaphragm - 0.05 * s)
        r = radius * rng.uniform(0.7, 1.3)
        out += np.exp(-(((xx - px) / r) ** 2 + ((yy - py) / (r * rng.uniform(0.7, 1.3))) ** 2))
    return amount * out * (1 + 0.35 * smooth_noise(rng, s, 12)) * sc.lung_blur


def pneumonia(sc: Scene) -> None:
    """Two or three patchy opacities on one side."""
    if sc.st["Pneumonia"] > 0:
        rng = sc.rng
        sc.img += _patches(sc, 0.20 * sc.st["Pneumonia"], int(rng.integers(2, 4)), 0.06 * sc.s,
                           side=-1 if rng.random() < 0.5 else 1)


def lung_opacity(sc: Scene) -> None:
    """Patchy opacities of their own, where no other finding already accounts for an opacity."""
    st = sc.st
    explained = max(st["Edema"], st["Consolidation"], st["Pneumonia"], st["Atelectasis"], st["Lung Lesion"])
    if st["Lung Opacity"] > 0 and explained < 0.3:
        sc.img += _patches(sc, 0.16 * st["Lung Opacity"], int(sc.rng.integers(1, 3)), 0.07 * sc.s)


def lung_lesion(sc: Scene) -> None:
    """One or two round, sharply marginated nodules or a mass."""
    les = sc.st["Lung Lesion"]
    if les <= 0:
        return
    a, s, rng = sc.a, sc.s, sc.rng
    for _ in range(int(rng.integers(1, 3))):
        sd = -1 if rng.random() < 0.5 else 1
        px = a.cx + sd * rng.uniform(a.mediast + 0.06 * s, a.half_w * 0.75)
        py = rng.uniform(a.top + 0.15 * s, a.diaphragm - 0.12 * s)
        r = rng.uniform(0.015, 0.045) * s * (0.6 + les)
        sc.img += (0.12 + 0.18 * les) * cv2.GaussianBlur(ellipse_mask((s, s), px, py, r, r), (0, 0), 0.6) * sc.lung


def atelectasis(sc: Scene) -> None:
    """Plate-like (discoid) opacities in the mid zone and volume loss: the raised hemidiaphragm (drawn with the
    lungs) and a mediastinum shifted towards the affected side."""
    ate = sc.st["Atelectasis"]
    if ate <= 0:
        return
    a, s, rng, side = sc.a, sc.s, sc.rng, sc.atelectasis_side
    for _ in range(int(rng.integers(2, 4))):
        y = a.top + rng.uniform(0.5, 0.72) * (a.diaphragm - a.top)
        x0 = a.cx + side * rng.uniform(a.mediast + 0.03 * s, 0.12 * s)
        x1 = x0 + side * rng.uniform(0.12, 0.2) * s
        band = np.zeros((s, s), np.float32)
        polyline(band, np.array([[x0, y], [x1, y + rng.uniform(-0.04, 0.02) * s]]), 1.0, s / 38)
        sc.img += 0.32 * ate * cv2.GaussianBlur(band, (0, 0), s / 160) * sc.lungs[side]
    shift = int(round(side * ate * 0.03 * s))
    sc.img = np.where(np.abs(sc.xx - a.cx) < 1.6 * a.mediast, np.roll(sc.img, shift, axis=1), sc.img)


def pleural_effusion(sc: Scene) -> None:
    """Fluid in the dependent costophrenic recess, one side or both, with a meniscus rising laterally."""
    eff = sc.st["Pleural Effusion"]
    if eff <= 0:
        return
    a, s, rng = sc.a, sc.s, sc.rng
    sides = [-1, 1] if rng.random() < 0.4 else [-1 if rng.random() < 0.5 else 1]
    for side in sides:
        height = (0.03 + 0.22 * eff) * (a.diaphragm - a.top)
        level = a.diaphragm - height
        lateral = np.clip((sc.xx - a.cx) * side / a.half_w, 0, 1)
        below = (sc.yy > level - 0.10 * s * lateral ** 2 * (0.5 + eff)).astype(np.float32)
        fluid = cv2.GaussianBlur(sc.lungs[side] * below, (0, 0), s / 80)
        sc.img = sc.img * (1 - fluid) + fluid * (a.body + 0.06)


def pleural_other(sc: Scene) -> None:
    """Pleural thickening along the lateral chest wall."""
    po = sc.st["Pleural Other"]
    if po <= 0:
        return
    a, s = sc.a, sc.s
    side = -1 if sc.rng.random() < 0.5 else 1
    wall = sc.lungs[side] - cv2.erode(sc.lungs[side], np.ones((3, 3), np.uint8),
                                      iterations=max(1, int((0.008 + 0.015 * po) * s)))
    wall *= (sc.yy > a.top + 0.2 * s)
    sc.img += 0.18 * po * cv2.GaussianBlur(wall, (0, 0), 0.8)


def support_devices(sc: Scene) -> None:
    """One to three of: an endotracheal tube, a central line, ECG leads, a pacemaker with its lead."""
    sd_ = sc.st["Support Devices"]
    if sd_ <= 0:
        return
    a, s, rng = sc.a, sc.s, sc.rng
    dev = np.zeros((s, s), np.float32)
    kinds = rng.permutation(4)[: 1 + int(rng.integers(0, 3))]
    for kind in kinds:
        if kind == 0:
            polyline(dev, np.array([[a.cx, 0], [a.cx + 0.005 * s, a.top + 0.12 * s]]), 1, s / 90)
        elif kind == 1:
            pts = np.array([[a.cx - 0.25 * s, a.top], [a.cx - 0.1 * s, a.top + 0.06 * s],
                            [a.cx + 0.01 * s, a.top + 0.25 * s]])
            polyline(dev, pts, 1, s / 150)
        elif kind == 2:
            for _ in range(3):
                px, py = a.cx + rng.uniform(-0.35, 0.35) * s, rng.uniform(0.15, 0.7) * s
                cv2.circle(dev, (int(px), int(py)), max(2, int(0.018 * s)), 1.0, -1, cv2.LINE_AA)
                polyline(dev, np.array([[px, py], [px + rng.uniform(-0.2, 0.2) * s, s]]), 0.8, 1)
        else:
            px, py = a.cx + 0.22 * s, a.top + 0.06 * s
            cv2.rectangle(dev, (int(px), int(py)), (int(px + 0.07 * s), int(py + 0.05 * s)), 1.0, -1)
            polyline(dev, np.array([[px, py + 0.03 * s], [a.cx + 0.1 * s, sc.heart_cy]]), 1, s / 150)
    sc.img = np.maximum(sc.img, dev * (0.55 + 0.45 * sd_))


FRONTAL_STEPS = (soft_tissue, lungs, vessel_markings, pneumothorax, add_vessels, mediastinum, heart, ribs,
                 clavicles_and_spine, edema, consolidation, pneumonia, lung_opacity, lung_lesion, atelectasis,
                 pleural_effusion, pleural_other, support_devices)


def render_frontal(strength: np.ndarray, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """A frontal radiograph as float32 in [0, 1] with the signs given by `strength` (one per label)."""
    scene = Scene(anatomy, {name: float(strength[i]) for name, i in IDX.items()}, rng)
    for step in FRONTAL_STEPS:
        step(scene)
    return scene.img
