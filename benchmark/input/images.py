"""Decoding one radiograph file into the square 8-bit grayscale array every backbone starts from (OpenCV only).

Handles 8- and 16-bit PNG (grayscale, RGB or RGBA, as in the NIH archives) and JPEG, preserves the aspect ratio
(centre crop or pad), and optionally equalises the histogram or applies CLAHE. Whatever the format, the pixels an
image's header announces are checked against max_image_pixels before OpenCV decodes it.
"""

from __future__ import annotations

import os

import cv2
import numpy as np


class BadImage(Exception):
    """An image file that is missing, unreadable, corrupt or too large (message names the file)."""


MAX_PIXELS = 100_000_000  # the default limit on the pixels an image's header may announce (Config.max_image_pixels)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def announced_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as a PNG's or JPEG's header announces it, read before anything is decoded; None when the
    header says nothing (another format, or a damaged file that the decoder will refuse)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:
                i += 1
                continue
            length = int.from_bytes(data[i + 2:i + 4], "big")
            if marker in _SOF:
                return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
            if marker == 0xDA:  # start of scan: no frame header before it
                return None
            i += 2 + length
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of any format OpenCV decodes, before decoding: PNG and JPEG (the frame
    header wherever it is, also after the first 64 KiB) here; TIFF, BMP, WebP, PGM/PPM, JPEG 2000 ... by Pillow's
    lazy Image.open, which reads only the header. None when neither can tell (the decoder then refuses a damaged
    file)."""
    size = announced_size(data)
    if size is not None or data[:8] == b"\x89PNG\r\n\x1a\n" or data[:2] == b"\xff\xd8":
        return size
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                return img.size
        except Image.DecompressionBombError:  # more than twice Pillow's own limit: report it as too large
            return (Image.MAX_IMAGE_PIXELS or 2**31, 2)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return None


def read_gray(path: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a file to a 2-D uint8 or uint16 array; BadImage names the file if that fails, if OpenCV refuses
    it, or if its header announces more than `max_pixels` pixels (a decompression bomb)."""
    if not os.path.isfile(path):
        raise BadImage(f"image {path} does not exist")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise BadImage(f"image {path} cannot be read ({exc.strerror or exc})") from None
    size = header_size(data.tobytes())
    if size and size[0] * size[1] > max_pixels:
        raise BadImage(f"image {path} announces {size[0]} x {size[1]} pixels, more than max_image_pixels "
                       f"({max_pixels:,}); raise that limit if the image is genuine")
    try:
        img = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH) if data.size else None
    except cv2.error as exc:
        reason = str(exc).strip().splitlines()[-1][:120] if str(exc).strip() else "cv2.error"
        raise BadImage(f"image {path} is refused by OpenCV ({reason})") from None
    if img is None or img.size == 0:
        raise BadImage(f"image {path} is not a readable PNG or JPEG (corrupt or truncated?)")
    return img


def to_uint8(img: np.ndarray) -> np.ndarray:
    """16-bit radiographs are scaled by their own maximum (bit depths differ between scanners)."""
    if img.dtype == np.uint8:
        return img
    top = float(img.max()) or 1.0
    return np.clip(img.astype(np.float32) * (255.0 / top), 0, 255).astype(np.uint8)


# Shrinking by less than this factor, bilinear interpolation is as close to an antialiased Lanczos resize as
# INTER_AREA (0.53 against 0.55 grey levels apart at 320 -> 224 px, 0.57 against 0.59 at 256 -> 224, on NIH
# images) and 3-5x faster (40 against 180-230 us here); below it, INTER_AREA is much closer (0.49 against 0.78
# at 512 -> 224).
LINEAR_MIN_SCALE = 0.7


def resize_square(img: np.ndarray, size: int, mode: str = "crop") -> np.ndarray:
    """Aspect-preserving resize to size x size: 'crop' fills and centre-crops, 'pad' fits and pads with black."""
    h, w = img.shape[:2]
    scale = size / min(h, w) if mode == "crop" else size / max(h, w)
    nh, nw = max(size if mode == "crop" else 1, round(h * scale)), max(size if mode == "crop" else 1, round(w * scale))
    interp = cv2.INTER_AREA if scale < LINEAR_MIN_SCALE else cv2.INTER_LINEAR
    img = cv2.resize(img, (nw, nh), interpolation=interp) if (nh, nw) != (h, w) else img
    if mode == "crop":
        top, left = (nh - size) // 2, (nw - size) // 2
        return np.ascontiguousarray(img[top:top + size, left:left + size])
    out = np.zeros((size, size), dtype=img.dtype)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = img
    return out


_CLAHE = None


def equalize(img: np.ndarray, mode: str) -> np.ndarray:
    global _CLAHE
    if mode == "hist":
        return cv2.equalizeHist(img)
    if mode == "clahe":
        if _CLAHE is None:
            _CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
        return _CLAHE.apply(img)
    return img


def load_image(path: str, size: int, resize: str = "crop", equalize_mode: str = "none",
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The model-ready grayscale image: decode, 8-bit, square resize, optional equalisation."""
    img = read_gray(path, max_pixels)
    img = resize_square(img, size, resize)
    img = to_uint8(img)
    return equalize(img, equalize_mode)
