"""Frame decoding: JPEG/PNG/raw, header-size guard, and every bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime import frames
from runtime.errors import InputError
from runtime.frames import decode_encoded, decode_frame, decode_raw, encode_image, read_header
from runtime.proto import pb

pytestmark = pytest.mark.timeout(30)


def _image(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 2)


def _no_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_a: object, **_k: object) -> None:
        raise AssertionError("the guard must refuse before decoding")

    monkeypatch.setattr(frames.cv2, "imdecode", fail)


def test_png_roundtrip_is_exact_and_header_read() -> None:
    img = _image()
    data = encode_image(img, "png")
    assert read_header(data) == frames.ImageHeader("png", 64, 48)
    np.testing.assert_array_equal(decode_encoded(data), img)


def test_jpeg_decodes_to_bgr_of_the_header_size() -> None:
    img = _image(37, 53)
    data = encode_image(img, "jpeg", quality=95)
    assert read_header(data, "jpeg") == frames.ImageHeader("jpeg", 53, 37)
    out = decode_encoded(data)
    assert out.shape == (37, 53, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img.astype(int)).mean() < 6


def test_gray_jpeg_decodes_to_three_channels() -> None:
    data = encode_image(_image()[:, :, 0], "jpeg")
    assert decode_encoded(data).shape == (48, 64, 3)


def test_raw_formats() -> None:
    img = _image()
    bgr = decode_raw(img.tobytes(), 64, 48, "BGR8")
    np.testing.assert_array_equal(bgr, img)
    rgb = decode_raw(img[:, :, ::-1].tobytes(), 64, 48, "RGB8")
    np.testing.assert_array_equal(rgb, img)
    gray = decode_raw(img[:, :, 0].tobytes(), 64, 48, "GRAY8")
    assert gray.shape == (48, 64)
    np.testing.assert_array_equal(gray, img[:, :, 0])


def test_png_bomb_refused_from_header(monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray(encode_image(_image(), "png"))
    data[16:24] = (100_000).to_bytes(4, "big") + (100_000).to_bytes(4, "big")
    _no_decode(monkeypatch)
    with pytest.raises(InputError, match=r"100000x100000 .* over the server's limit"):
        decode_encoded(bytes(data), max_pixels=4096 * 4096)


def test_jpeg_bomb_refused_from_sof(monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray(encode_image(_image(), "jpeg"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    assert read_header(bytes(data)).width == 60000
    _no_decode(monkeypatch)
    with pytest.raises(InputError, match="60000x60000"):
        decode_encoded(bytes(data), max_pixels=1_000_000)


def test_small_limit_applies_to_raw_and_encoded() -> None:
    img = _image()
    with pytest.raises(InputError, match="--max-pixels"):
        decode_encoded(encode_image(img, "png"), max_pixels=1000)
    with pytest.raises(InputError, match="--max-pixels"):
        decode_raw(img.tobytes(), 64, 48, "BGR8", max_pixels=1000)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"GIF89a-not-supported", "neither JPEG nor PNG"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200), "corrupt"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "IHDR"),
    ],
)
def test_bad_encoded_bytes(data: bytes, match: str) -> None:
    with pytest.raises(InputError, match=match):
        decode_encoded(data)


def test_corrupt_and_truncated_jpeg() -> None:
    data = encode_image(_image(), "jpeg")
    start = data.index(b"\xff\xda") + 20  # inside the entropy-coded scan
    garbage = data[:start] + bytes(np.random.default_rng(1).integers(0, 256, 400, np.uint8))
    for bad in (data[: len(data) // 2], garbage):
        with pytest.raises(InputError, match="corrupt"):
            decode_encoded(bad)


def test_format_hint_must_match() -> None:
    with pytest.raises(InputError, match="says PNG but the data is JPEG"):
        decode_encoded(encode_image(_image(), "jpeg"), format_hint="png")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((b"\x00" * 10, 2, 2, "BGR8"), r"10 bytes but .* 2 x 2 x 3 \(BGR8\) = 12"),
        ((b"\x00" * 12, 0, 2, "BGR8"), "must be > 0"),
        ((b"", 2, 2, "GRAY8"), "empty"),
        ((b"\x00" * 4, 2, 2, "YUV420"), "not supported"),
    ],
)
def test_bad_raw(args: tuple, match: str) -> None:
    with pytest.raises(InputError, match=match):
        decode_raw(*args)


def test_decode_frame_dispatch_and_enum_checks() -> None:
    img = _image()
    raw = pb.Frame(
        raw=pb.RawImage(data=img.tobytes(), width=64, height=48, pixel_format=pb.PIXEL_FORMAT_BGR8)
    )
    np.testing.assert_array_equal(decode_frame(raw), img)
    enc = pb.Frame(
        encoded=pb.EncodedImage(data=encode_image(img, "png"), format=pb.IMAGE_FORMAT_PNG)
    )
    np.testing.assert_array_equal(decode_frame(enc), img)
    with pytest.raises(InputError, match="no image"):
        decode_frame(pb.Frame(frame_id=3))
    for fmt in (pb.PIXEL_FORMAT_UNSPECIFIED, 99):
        bad = pb.Frame(raw=pb.RawImage(data=b"\x00" * 12, width=2, height=2, pixel_format=fmt))
        with pytest.raises(InputError, match="pixel_format"):
            decode_frame(bad)
    bad_hint = pb.Frame(encoded=pb.EncodedImage(data=encode_image(img, "png"), format=42))
    with pytest.raises(InputError, match="ImageFormat"):
        decode_frame(bad_hint)


def test_jpeg_reduction_factor() -> None:
    assert frames.jpeg_reduction(640, 480, (320, 320)) == 2
    assert frames.jpeg_reduction(1920, 1080, (320, 320)) == 4
    assert frames.jpeg_reduction(3840, 2160, (320, 320)) == 8
    assert frames.jpeg_reduction(600, 480, (320, 320)) == 1  # 1/2 would be smaller than needed
    assert frames.jpeg_reduction(64, 48, (320, 320)) == 1


def test_reduced_jpeg_decode_only_for_large_jpeg() -> None:
    img = _image(480, 640)
    full = decode_encoded(encode_image(img, "jpeg", quality=95))
    half = decode_encoded(encode_image(img, "jpeg", quality=95), fit_size=(320, 320))
    assert half.shape == (240, 320, 3)
    resized = cv2.resize(full, (320, 240), interpolation=cv2.INTER_AREA)
    assert np.abs(half.astype(int) - resized.astype(int)).mean() < 4
    assert decode_encoded(encode_image(img, "png"), fit_size=(320, 320)).shape == (480, 640, 3)
    odd = frames.decode_frame_scaled(
        pb.Frame(encoded=pb.EncodedImage(data=encode_image(_image(481, 641), "jpeg"))),
        fit_size=(160, 160),
    )
    assert (odd.width, odd.height, odd.scale, odd.image.shape) == (641, 481, 4, (121, 161, 3))
