"""Image loading errors, letterbox geometry and its round trip."""
from __future__ import annotations

import numpy as np
import pytest

from edgedet.errors import DataError
from edgedet.runtime.preprocess import as_rgb_uint8, letterbox, load_image, normalize, resize_for_model


def _write_jpeg(path, h=60, w=80):
    from PIL import Image

    img = (np.indices((h, w)).sum(0)[..., None] * np.array([1, 2, 3]) % 256).astype(np.uint8)
    Image.fromarray(img).save(path, quality=95)
    return img


def test_load_image_rgb(tmp_path):
    from PIL import Image

    p = tmp_path / "g.png"
    Image.fromarray(np.full((5, 7), 100, np.uint8), mode="L").save(p)
    img = load_image(p)
    assert img.shape == (5, 7, 3) and img.dtype == np.uint8 and (img == 100).all()


def test_load_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not an image")
    with pytest.raises(DataError, match="notes.jpg: not an image"):
        load_image(bad)
    good = tmp_path / "cut.jpg"
    _write_jpeg(good, 200, 300)
    data = good.read_bytes()
    cut = tmp_path / "truncated.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated.jpg: truncated or corrupt"):
        load_image(cut)
    with pytest.raises(DataError, match="missing.png: no such image"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(DataError):
        as_rgb_uint8(np.zeros((4, 4, 2)))


@pytest.mark.parametrize("hw,size", [((480, 640), (320, 320)), ((640, 480), (320, 320)), ((100, 100), (128, 128)), ((300, 200), (128, 256))])
def test_letterbox_geometry(hw, size):
    img = np.full((*hw, 3), 200, np.uint8)
    canvas, scale = letterbox(img, size, mean=(10, 20, 30))
    assert canvas.shape == (*size, 3) and canvas.dtype == np.uint8
    nh, nw = round(hw[0] * scale), round(hw[1] * scale)
    assert nh == size[0] or nw == size[1]  # the longer side fills the canvas
    assert (canvas[:nh, :nw] == 200).all()  # image at the top-left
    assert (canvas[nh:, :] == [10, 20, 30]).all() and (canvas[:, nw:] == [10, 20, 30]).all()  # mean padding
    # normalised padding is exactly 0
    norm = normalize(canvas, (10, 20, 30), (2, 2, 2))
    assert norm.dtype == np.float32 and (norm[nh:, :] == 0).all()


def test_letterbox_round_trip_points():
    """A pixel feature found on the canvas maps back to the same original pixel (box / scale)."""
    h, w = 480, 640
    img = np.zeros((h, w, 3), np.uint8)
    y0, x0, y1, x1 = 100, 200, 300, 520
    img[y0:y1, x0:x1] = 255
    canvas, scale = letterbox(img, (320, 320))
    ys, xs = np.nonzero(canvas[..., 0] > 127)
    box_input = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    back = box_input / scale
    np.testing.assert_allclose(back, [x0, y0, x1, y1], atol=1.0 / scale + 1e-6)
    c2, s2 = resize_for_model(img, (320, 320), "letterbox")
    assert s2 == (scale, scale) and (c2 == canvas).all()
    c3, s3 = resize_for_model(img, (320, 160), "stretch")
    assert c3.shape == (320, 160, 3) and s3 == (320 / 480, 160 / 640)


def test_as_rgb_uint8_accepts_arrays_and_paths(tmp_path):
    p = tmp_path / "a.jpg"
    _write_jpeg(p)
    assert as_rgb_uint8(str(p)).shape == (60, 80, 3)
    assert as_rgb_uint8(np.zeros((4, 4))).shape == (4, 4, 3)
    f = as_rgb_uint8(np.ones((2, 2, 4), np.float32) * 0.5)
    assert f.dtype == np.uint8 and f.shape == (2, 2, 3) and (f == 127).all()


def _photo(h=480, w=640):
    """Smooth colour gradients with a few sharp blobs: a stand-in for a photo."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w * 220, yy / h * 220, (xx + yy) / (w + h) * 255], -1)
    rng = np.random.default_rng(0)
    for _ in range(8):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(10, 50)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 255, 3)
    return img.astype(np.uint8)


@pytest.mark.parametrize("hw,size,mode,decoded", [
    ((480, 640), (320, 320), "letterbox", (480, 640)),  # lands at 320x240: 2x is left to the training filter
    ((960, 1280), (320, 320), "letterbox", (480, 640)),  # 4x: decoded at 1/2, then 2x
    ((1224, 1632), (320, 320), "letterbox", (612, 816)),  # 5.1x: decoded at 1/2, then 2.55x
    ((1200, 1600), (160, 160), "letterbox", (300, 400)),  # 10x: decoded at 1/4, then 2.5x
    ((1080, 1920), (256, 256), "stretch", (540, 960)),  # per axis 7.5x / 4.2x: 1/2
    ((200, 300), (320, 320), "letterbox", (200, 300)),  # upscaled: full decode
])
def test_jpeg_decoded_reduced_keeps_geometry(tmp_path, monkeypatch, hw, size, mode, decoded):
    """A large JPEG is decoded reduced in the DCT domain, never below twice the size it lands at;
    the geometry and the scale that maps boxes back refer to the original image, and the canvas
    stays within a grey level or so of the reference path (full decode, Pillow)."""
    from PIL import Image

    from edgedet.runtime.preprocess import load_for_model

    p = tmp_path / "photo.jpg"
    Image.fromarray(_photo(*hw)).save(p, quality=95)
    img, orig = load_for_model(p, size, mode)
    assert orig == hw and img.shape[:2] == decoded
    fast, s_fast = resize_for_model(img, size, mode, source_hw=orig)
    monkeypatch.setenv("EDGEDET_RESIZE", "pillow")
    assert load_for_model(p, size, mode)[0].shape[:2] == hw
    ref, s_ref = resize_for_model(load_image(p), size, mode)
    assert s_fast == s_ref and fast.shape == ref.shape
    assert np.abs(fast.astype(int) - ref.astype(int)).mean() < 1.0


@pytest.mark.parametrize("hw,size,mode", [((480, 640), (320, 320), "letterbox"), ((720, 1280), (320, 320), "letterbox"),
                                          ((1080, 1920), (320, 320), "letterbox"), ((480, 640), (160, 320), "stretch"),
                                          ((480, 640), (256, 256), "letterbox")])
def test_array_resize_matches_pillow(monkeypatch, hw, size, mode):
    """Camera frames (arrays, often a reversed BGR view): integer factors run on OpenCV and give
    Pillow's BILINEAR (the training filter) to one grey level; other factors are Pillow's."""
    pytest.importorskip("cv2")
    from edgedet.runtime import preprocess

    bgr = np.ascontiguousarray(_photo(*hw)[..., ::-1])
    rgb_view = bgr[..., ::-1]  # what the video source yields
    fast, s = resize_for_model(rgb_view, size, mode)
    same, _ = resize_for_model(np.ascontiguousarray(rgb_view), size, mode)
    assert (fast == same).all()
    assert preprocess.resize_backend() == "opencv"
    monkeypatch.setenv("EDGEDET_RESIZE", "pillow")
    assert preprocess.resize_backend() == "pillow"
    ref, s_ref = resize_for_model(rgb_view, size, mode)
    d = np.abs(fast.astype(int) - ref.astype(int))
    assert s == s_ref and d.max() <= 1 and d.mean() < 0.3
