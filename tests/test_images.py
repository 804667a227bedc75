"""Decoding one radiograph: bit depths, colour PNGs, JPEG, aspect-preserving resize, bad files."""

import cv2
import numpy as np
import pytest

from benchmark.input.images import BadImage, load_image, read_gray, resize_square
from tests.helpers import TEST_DATA

NIH = TEST_DATA / "nih"


def test_real_nih_pngs_8bit_and_rgba_full_resolution():
    small = read_gray(str(NIH / "00000100_000.png"))
    assert small.shape == (256, 256) and small.dtype == np.uint8
    full = read_gray(str(NIH / "00000100_000_full_rgba.png"))  # an RGBA original from the NIH archive
    assert full.shape == (1024, 1024) and full.ndim == 2
    a = load_image(str(NIH / "00000100_000.png"), 64)
    b = load_image(str(NIH / "00000100_000_full_rgba.png"), 64)
    assert a.shape == b.shape == (64, 64)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95  # the same radiograph at two resolutions


def test_16bit_png_and_jpeg(tmp_path):
    ramp = (np.arange(100 * 80, dtype=np.uint32).reshape(100, 80) * 3).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "x16.png"), ramp)
    img16 = read_gray(str(tmp_path / "x16.png"))
    assert img16.dtype == np.uint16
    out = load_image(str(tmp_path / "x16.png"), 32)
    assert out.dtype == np.uint8 and out.max() >= 250 and out.min() < 40  # scaled by its maximum, centre-cropped
    rgb = np.dstack([np.full((50, 70), 200, np.uint8)] * 3)
    cv2.imwrite(str(tmp_path / "c.jpg"), rgb)
    assert abs(int(load_image(str(tmp_path / "c.jpg"), 32).mean()) - 200) <= 2


def test_aspect_preserving_crop_and_pad():
    img = np.zeros((100, 200), np.uint8)
    img[:, 50:150] = 255  # a centred square
    crop = resize_square(img, 50, "crop")
    assert crop.shape == (50, 50) and crop.mean() > 250  # the centre crop is the square
    pad = resize_square(img, 50, "pad")
    assert pad.shape == (50, 50)
    assert pad[:12].max() == 0 and pad[-12:].max() == 0  # black bars top and bottom
    assert pad[25, 25] == 255 and pad[25, 2] == 0


def test_resize_is_bilinear_for_small_shrinks_and_area_below():
    img = read_gray(str(NIH / "00000129_000.png"))  # a real 256 px radiograph
    assert np.array_equal(resize_square(img, 224), cv2.resize(img, (224, 224), interpolation=cv2.INTER_LINEAR))
    assert np.array_equal(resize_square(img, 100), cv2.resize(img, (100, 100), interpolation=cv2.INTER_AREA))
    # why: shrinking by less than 1/0.7, bilinear is at least as close as INTER_AREA to an antialiased Lanczos resize
    from PIL import Image

    ref = np.asarray(Image.fromarray(img).resize((224, 224), Image.LANCZOS)).astype(float)
    linear_err = np.abs(resize_square(img, 224).astype(float) - ref).mean()
    area_err = np.abs(cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA).astype(float) - ref).mean()
    assert linear_err <= area_err


def test_bad_images_name_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(BadImage, match="broken.png is not a readable"):
        read_gray(str(tmp_path / "broken.png"))
    with pytest.raises(BadImage, match="missing.png does not exist"):
        read_gray(str(tmp_path / "missing.png"))


def test_a_decompression_bomb_and_an_image_opencv_refuses_are_bad_images(tmp_path, monkeypatch):
    import struct
    import zlib

    # a valid PNG header announcing 60000 x 60000 pixels (3.6 gigapixels), with almost no data
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))
    with pytest.raises(BadImage, match=r"bomb.png announces 60000 x 60000 pixels, more than max_image_pixels"):
        read_gray(str(bomb))
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), np.full((30, 40), 100, np.uint8))
    from benchmark.input.images import announced_size

    assert announced_size(good.read_bytes()) == (40, 30)
    with pytest.raises(BadImage, match="announces 40 x 30 pixels"):
        read_gray(str(good), max_pixels=1000)

    def refuse(*args):
        raise cv2.error("OpenCV(4.x) imgcodecs: image size exceeds CV_IO_MAX_IMAGE_PIXELS")

    monkeypatch.setattr(cv2, "imdecode", refuse)
    with pytest.raises(BadImage, match=r"good.jpg is refused by OpenCV \(.*CV_IO_MAX_IMAGE_PIXELS"):
        read_gray(str(good))


def test_bad_images_of_every_kind_are_skipped_with_skip_bad_images(tmp_path, monkeypatch):
    from benchmark.input.cache import build_cache

    files = []
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((20, 20), 40 * i, np.uint8))
        files.append(str(tmp_path / f"{i}.png"))
    cv2.imwrite(str(tmp_path / "huge.png"), np.zeros((300, 300), np.uint8))
    files.append(str(tmp_path / "huge.png"))
    cache = build_cache(files, 16, cache_dir=tmp_path / "c", skip_bad=True, log=None, max_pixels=50_000)
    assert [i for i, _ in cache.bad] == [4] and "max_image_pixels" in cache.bad[0][1]


@pytest.mark.parametrize("ext", ["tiff", "bmp", "webp", "pgm"])
def test_max_image_pixels_is_checked_from_the_header_of_every_format(tmp_path, ext):
    path = tmp_path / f"big.{ext}"
    cv2.imwrite(str(path), np.full((300, 400), 128, np.uint8))
    assert read_gray(str(path)).shape == (300, 400)  # decoded within the limit
    with pytest.raises(BadImage, match=rf"big\.{ext} announces 400 x 300 pixels, more than max_image_pixels"):
        read_gray(str(path), max_pixels=100_000)


def test_a_jpeg_whose_size_comes_after_64_kib_is_checked_too(tmp_path):
    ok, jpeg = cv2.imencode(".jpg", np.full((300, 400), 90, np.uint8))
    jpeg = jpeg.tobytes()
    padding = b"".join(b"\xff\xef" + (2 + 40_000).to_bytes(2, "big") + bytes(40_000) for _ in range(2))  # APP15
    path = tmp_path / "late.jpg"
    path.write_bytes(jpeg[:2] + padding + jpeg[2:])  # the frame header now starts beyond 80 KB
    assert jpeg[2:].find(b"\xff\xc0") + 2 + len(padding) > 65536
    assert read_gray(str(path)).shape == (300, 400)
    with pytest.raises(BadImage, match="announces 400 x 300 pixels"):
        read_gray(str(path), max_pixels=100_000)
