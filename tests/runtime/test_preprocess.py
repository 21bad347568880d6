from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime.errors import InputError
from runtime.preprocess import PAD_VALUE, Letterbox, Preprocessor
from tests.runtime.tiny_models import make_spec, scene


def reference(image_bgr: np.ndarray, size: tuple[int, int], mean, std) -> np.ndarray:
    """The plain, slow way: resize, pad 114, BGR->RGB, normalize, HWC->CHW."""
    lb = Letterbox.fit(image_bgr.shape[:2], size)
    new_h, new_w = lb.resized
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((*size, 3), PAD_VALUE, np.uint8)
    canvas[lb.pad_y : lb.pad_y + new_h, lb.pad_x : lb.pad_x + new_w] = resized
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32)
    return ((rgb - np.array(mean, np.float32)) / np.array(std, np.float32)).transpose(2, 0, 1)


SIZES = [(1, 1), (1, 640), (640, 1), (37, 53), (480, 640), (64, 64), (3000, 4000), (4000, 3000)]


@pytest.mark.parametrize("src", SIZES)
@pytest.mark.parametrize("dst", [(64, 64), (320, 320), (384, 640)])
def test_letterbox_round_trip(src, dst):
    lb = Letterbox.fit(src, dst)
    h, w = src
    new_h, new_w = lb.resized
    assert 1 <= new_h <= dst[0] and 1 <= new_w <= dst[1]
    assert (new_h == dst[0]) or (new_w == dst[1])  # one side fills the input
    assert (
        lb.pad_x >= 0
        and lb.pad_x + new_w <= dst[1]
        and lb.pad_y >= 0
        and lb.pad_y + new_h <= dst[0]
    )
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, [w, h], (50, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, [w, h], (50, 2))], axis=1)
    back = lb.to_original(lb.to_network(boxes))
    np.testing.assert_allclose(back, boxes, atol=1e-4, rtol=0)
    assert back.dtype == np.float64
    # The image corners land on the resized region (up to the rounding of its size, and a
    # side of less than one pixel, which is stretched to one).
    corners = lb.to_network(np.array([[0.0, 0.0, w, h]]))[0]
    np.testing.assert_allclose(corners[:2], [lb.pad_x, lb.pad_y])
    tol = 1.0 if min(new_h, new_w) == 1 else 0.5 + 1e-9
    np.testing.assert_allclose(corners[2:], [lb.pad_x + new_w, lb.pad_y + new_h], atol=tol)


def test_letterbox_float32_and_clip():
    lb = Letterbox.fit((480, 640), (320, 320))
    assert (lb.scale, lb.pad_x, lb.pad_y) == (0.5, 0, 40)
    boxes = np.array([[10.0, 20.0, 600.5, 470.25]], np.float32)
    back = lb.to_original(lb.to_network(boxes))
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, boxes, rtol=1e-6)
    net = np.array([[-5.0, 30.0, 330.0, 300.0]])
    np.testing.assert_allclose(lb.to_original(net, clip=True), [[0.0, 0.0, 640.0, 480.0]])


@pytest.mark.parametrize("shape", [(480, 640), (64, 64), (1, 1), (100, 7), (3000, 4000)])
def test_matches_reference(shape):
    spec = make_spec(input_size=(64, 96), mean=(10.0, 20.0, 30.0), std=(50.0, 60.0, 70.0))
    pre = Preprocessor(spec)
    img = scene(*shape, seed=3)
    lb = pre(img)
    assert lb.src == shape and lb.dst == (64, 96)
    np.testing.assert_allclose(
        pre.buffer[0], reference(img, (64, 96), spec.mean, spec.std), atol=1e-5
    )


def test_gray_bgra_rgb_variants_equal_bgr():
    spec = make_spec(input_size=(64, 64))
    pre = Preprocessor(spec, slots=2)
    bgr = scene(50, 70, seed=5)
    pre(bgr, 0)
    expected = pre.buffer[0].copy()
    pre(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), 1, pixel_format="RGB")
    np.testing.assert_array_equal(pre.buffer[1], expected)
    pre(cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), 1)
    np.testing.assert_array_equal(pre.buffer[1], expected)

    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    pre(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), 0)
    expected_gray = pre.buffer[0].copy()
    pre(gray, 1)
    np.testing.assert_array_equal(pre.buffer[1], expected_gray)
    pre(gray[:, :, None], 1)
    np.testing.assert_array_equal(pre.buffer[1], expected_gray)


def test_buffer_is_reused_and_padding_follows_geometry():
    spec = make_spec(input_size=(64, 64))
    pre = Preprocessor(spec)
    buf = pre.buffer
    pre(scene(32, 64, 1))  # wide: pad rows top and bottom
    assert np.all(buf[0, :, :16] == PAD_VALUE / 255.0)
    pre(scene(64, 32, 2))  # tall: the old pad rows now hold image, columns are padded
    assert pre.buffer is buf
    np.testing.assert_allclose(
        pre.buffer[0], reference(scene(64, 32, 2), (64, 64), spec.mean, spec.std), atol=1e-6
    )


def test_float16_buffer():
    spec = make_spec(input_size=(64, 64))
    pre = Preprocessor(spec, np.float16)
    img = scene(48, 64, 4)
    pre(img)
    assert pre.buffer.dtype == np.float16
    np.testing.assert_allclose(
        pre.buffer[0], reference(img, (64, 64), spec.mean, spec.std), atol=1e-3
    )


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros((0, 10), np.uint8), "empty"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((10, 10, 3), np.uint16), "uint8"),
        (np.zeros((10, 10, 5), np.uint8), "shape"),
        (np.zeros((10, 10, 2), np.uint8), "shape"),
        (np.zeros((2, 10, 10, 3), np.uint8), "shape"),
        (np.zeros((10,), np.uint8), "shape"),
        ([[1, 2], [3, 4]], "numpy"),
    ],
)
def test_rejects_bad_images(image, message):
    pre = Preprocessor(make_spec())
    with pytest.raises(InputError, match=message):
        pre(image)


def test_rejects_bad_pixel_format():
    with pytest.raises(InputError, match="pixel_format"):
        Preprocessor(make_spec())(scene(8, 8), pixel_format="YUV")
