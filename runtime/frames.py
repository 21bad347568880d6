"""Frame decoding for the service: bytes from the wire in, a uint8 image array out.

Encoded frames must be JPEG or PNG. Their width and height are read from the file
header (JPEG SOF segment, PNG IHDR chunk) *before* anything is decoded, so an image that
claims more than ``max_pixels`` pixels (a decompression bomb: a few kB that inflate to
gigabytes) is refused without allocating its pixels. Raw frames are checked for
``len(data) == width * height * channels``. A JPEG must end with its end-of-image marker
(truncated frames are refused; libjpeg would silently fill the missing part with grey).

Output: (H, W, 3) uint8 BGR, or (H, W) uint8 for GRAY8 raw frames, in the pixel grid of
the image as sent (EXIF orientation is ignored, so boxes refer to the stored pixels).
Every failure raises :class:`runtime.errors.InputError` naming the field at fault.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from runtime.errors import InputError
from runtime.proto import pb

DEFAULT_MAX_PIXELS = 4096 * 4096
JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_TAIL_BYTES = 1024  # where jpeg_complete looks for the end-of-image marker
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers carry the image size: C0..CF except DHT (C4), JPG (C8), DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field.
_STANDALONE_MARKERS = frozenset([0x01, 0xD8, *range(0xD0, 0xD8)])
_IMAGE_FORMATS = {
    pb.IMAGE_FORMAT_UNSPECIFIED: None,
    pb.IMAGE_FORMAT_JPEG: "jpeg",
    pb.IMAGE_FORMAT_PNG: "png",
}
_PIXEL_FORMATS = {
    pb.PIXEL_FORMAT_BGR8: ("BGR8", 3),
    pb.PIXEL_FORMAT_RGB8: ("RGB8", 3),
    pb.PIXEL_FORMAT_GRAY8: ("GRAY8", 1),
}
_DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
_REDUCED_FLAGS = {
    1: 0,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


@dataclass(frozen=True)
class ImageHeader:
    """What an encoded image's header says: ``format`` ("jpeg"/"png"), width, height."""

    format: str
    width: int
    height: int


def sniff_format(data: bytes) -> str | None:
    """ "jpeg", "png" or None, from the magic bytes."""
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    return None


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame segment, without decoding."""
    n = len(data)
    i = 2  # after SOI
    while i < n:
        if data[i] != 0xFF:
            raise InputError(f"corrupt JPEG: expected a segment marker at byte {i}")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker in _STANDALONE_MARKERS:
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any SOF
            break
        if i + 2 > n:
            break
        seg_len = int.from_bytes(data[i : i + 2], "big")
        if seg_len < 2:
            raise InputError(f"corrupt JPEG: segment at byte {i} has length {seg_len}")
        if marker in _SOF_MARKERS:
            if i + 7 > n:
                break
            height = int.from_bytes(data[i + 3 : i + 5], "big")
            width = int.from_bytes(data[i + 5 : i + 7], "big")
            if width == 0 or height == 0:
                raise InputError(
                    f"JPEG header gives size {width}x{height}; images whose height is only "
                    "defined after the scan (DNL) are not supported: re-encode the frame"
                )
            return width, height
        i += seg_len
    raise InputError("corrupt or truncated JPEG: no frame header (SOF) before the image data")


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, without decoding."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise InputError("corrupt PNG: the IHDR chunk is missing or truncated")
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    if width == 0 or height == 0:
        raise InputError(f"corrupt PNG: IHDR gives size {width}x{height}")
    return width, height


def jpeg_complete(data: bytes) -> bool:
    """Whether JPEG bytes end with the end-of-image marker (FF D9), zero padding allowed.

    Only the last ``JPEG_TAIL_BYTES`` bytes are looked at, so the tail of a file is enough.
    A truncated JPEG lacks the marker; libjpeg would decode it with the rest filled grey.
    """
    return data[-JPEG_TAIL_BYTES:].rstrip(b"\x00").endswith(b"\xff\xd9")


def read_header(data: bytes, format_hint: str | None = None) -> ImageHeader:
    """Identify a JPEG/PNG and read its size from the header. Raises InputError."""
    fmt = sniff_format(data)
    if fmt is None:
        raise InputError(
            f"encoded image ({len(data)} bytes, starts {data[:4].hex()}) is neither JPEG nor "
            "PNG; send JPEG/PNG bytes or use a raw image"
        )
    if format_hint is not None and format_hint != fmt:
        raise InputError(f"encoded.format says {format_hint.upper()} but the data is {fmt.upper()}")
    if fmt == "jpeg":
        width, height = jpeg_size(data)
        if not jpeg_complete(data):
            raise InputError(
                f"corrupt or truncated JPEG ({len(data)} bytes): it does not end with the "
                "end-of-image marker; send the complete file"
            )
    else:
        width, height = png_size(data)
    return ImageHeader(fmt, width, height)


def check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    """Raise InputError when ``width * height`` exceeds ``max_pixels``."""
    if width * height > max_pixels:
        raise InputError(
            f"{what} is {width}x{height} = {width * height} pixels, over the server's limit of "
            f"{max_pixels} (--max-pixels); send a smaller image"
        )


def jpeg_reduction(width: int, height: int, fit_size: tuple[int, int]) -> int:
    """Largest r in (1, 2, 4, 8) such that a ``width`` x ``height`` image decoded at 1/r
    is still at least as large as its letterbox into ``fit_size`` (H, W)."""
    scale = min(fit_size[0] / height, fit_size[1] / width)
    return max([1] + [r for r in (2, 4, 8) if r * scale <= 1.0])


def decode_encoded(
    data: bytes,
    *,
    format_hint: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fit_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode JPEG/PNG bytes to (H, W, 3) uint8 BGR after checking the header's size.

    ``fit_size`` (H, W): a JPEG much larger than it is decoded at 1/2, 1/4 or 1/8 scale
    by libjpeg's DCT scaling (see :func:`jpeg_reduction`; cheaper than decoding in full
    and resizing); the result is then ``ceil(H / r) x ceil(W / r)``.
    """
    return decode_encoded_scaled(
        data, format_hint=format_hint, max_pixels=max_pixels, fit_size=fit_size
    )[0]


def decode_encoded_scaled(
    data: bytes,
    *,
    format_hint: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fit_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, ImageHeader, int]:
    """:func:`decode_encoded` that also returns the header and the reduction r."""
    if not data:
        raise InputError("encoded.data is empty: send the bytes of a JPEG or PNG file")
    header = read_header(data, format_hint)
    name = header.format.upper()
    check_pixels(header.width, header.height, max_pixels, f"encoded {name}")
    r = 1
    if fit_size is not None and header.format == "jpeg":
        r = jpeg_reduction(header.width, header.height, fit_size)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE_FLAGS | _REDUCED_FLAGS[r])
    if image is None:
        raise InputError(f"corrupt {name}: the image data could not be decoded")
    expected = (-(-header.height // r), -(-header.width // r))
    if image.shape[:2] != expected:
        raise InputError(
            f"corrupt {name}: header says {header.width}x{header.height} but the data "
            f"decodes to {image.shape[1] * r}x{image.shape[0] * r}"
        )
    return image, header, r


def decode_raw(
    data: bytes,
    width: int,
    height: int,
    pixel_format: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Raw pixels to (H, W, 3) uint8 BGR (BGR8, RGB8) or (H, W) uint8 (GRAY8)."""
    channels = {"BGR8": 3, "RGB8": 3, "GRAY8": 1}.get(pixel_format)
    if channels is None:
        raise InputError(
            f"raw.pixel_format {pixel_format!r} is not supported; use BGR8, RGB8 or GRAY8"
        )
    if width <= 0 or height <= 0:
        raise InputError(f"raw image size {width}x{height}: width and height must be > 0")
    check_pixels(width, height, max_pixels, "raw image")
    if not data:
        raise InputError("raw.data is empty: send width * height * channels bytes")
    expected = width * height * channels
    if len(data) != expected:
        raise InputError(
            f"raw.data has {len(data)} bytes but width x height x channels = "
            f"{width} x {height} x {channels} ({pixel_format}) = {expected}"
        )
    flat = np.frombuffer(data, np.uint8)
    if channels == 1:
        return flat.reshape(height, width)
    image = flat.reshape(height, width, 3)
    if pixel_format == "RGB8":
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return image


@dataclass(frozen=True)
class DecodedFrame:
    """A decoded frame: ``image`` (H', W'[, 3]) uint8 BGR/gray, the size of the image as
    sent (``width`` x ``height``) and the decode reduction ``scale`` (H' = ceil(H / scale);
    a pixel coordinate in ``image`` times ``scale`` is one in the image as sent)."""

    image: np.ndarray
    width: int
    height: int
    scale: int = 1


def decode_frame(frame: pb.Frame, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode the image of an ``understudy.v1.Frame`` at full size (see
    :func:`decode_frame_scaled`)."""
    return decode_frame_scaled(frame, max_pixels=max_pixels).image


def decode_frame_scaled(
    frame: pb.Frame,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fit_size: tuple[int, int] | None = None,
) -> DecodedFrame:
    """Decode a Frame's image (see :func:`decode_encoded`, :func:`decode_raw`); with
    ``fit_size`` large JPEGs are decoded reduced. Raises InputError for a missing,
    malformed or oversized image."""
    kind = frame.WhichOneof("image")
    if kind == "encoded":
        enc = frame.encoded
        if enc.format not in _IMAGE_FORMATS:
            raise InputError(
                f"encoded.format {enc.format} is not a known ImageFormat; use JPEG, PNG or "
                "leave it unset"
            )
        image, header, r = decode_encoded_scaled(
            enc.data,
            format_hint=_IMAGE_FORMATS[enc.format],
            max_pixels=max_pixels,
            fit_size=fit_size,
        )
        return DecodedFrame(image, header.width, header.height, r)
    if kind == "raw":
        raw = frame.raw
        if raw.pixel_format not in _PIXEL_FORMATS:
            raise InputError(
                f"raw.pixel_format {raw.pixel_format} is not supported; use "
                "PIXEL_FORMAT_BGR8, PIXEL_FORMAT_RGB8 or PIXEL_FORMAT_GRAY8"
            )
        name, _ = _PIXEL_FORMATS[raw.pixel_format]
        image = decode_raw(raw.data, raw.width, raw.height, name, max_pixels=max_pixels)
        return DecodedFrame(image, raw.width, raw.height)
    raise InputError("frame has no image: set either `encoded` (JPEG/PNG) or `raw` pixels")


def encode_image(image: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """(H, W, 3) BGR or (H, W) gray uint8 -> JPEG/PNG bytes (for clients and tests)."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise InputError(f"image must be (H, W[, 3]) uint8, got {image.shape} {image.dtype}")
    match fmt:
        case "jpeg":
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        case "png":
            ok, buf = cv2.imencode(".png", image)
        case _:
            raise InputError(f"unknown image encoding {fmt!r}; use 'jpeg' or 'png'")
    if not ok:
        raise InputError(f"could not encode the image as {fmt}")
    return buf.tobytes()
