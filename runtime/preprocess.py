"""Frame -> network input: letterbox (OpenCV resize + pad 114), channel order, normalize, NCHW.

The :class:`Preprocessor` owns one preallocated input tensor of shape
(slots, 3, H, W) and writes each frame into a slot in two passes over the pixels:
``cv2.resize`` into a small uint8 scratch image, then one fused scale-and-shift per
channel (``cv2.addWeighted``) straight into the slot's letterboxed region. The padding
is written only when a slot's letterbox geometry changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from runtime.errors import InputError
from runtime.model_spec import ModelSpec

PAD_VALUE = 114
PIXEL_FORMATS = ("BGR", "RGB")


@dataclass(frozen=True)
class Letterbox:
    """The affine map between original-image pixels and network-input pixels.

    ``network = original * scale + (pad_x, pad_y)``; ``src`` is the original (h, w),
    ``dst`` the network input (H, W). The resized image occupies
    ``[pad_x, pad_x + round(w * scale)) x [pad_y, pad_y + round(h * scale))``.
    """

    scale: float
    pad_x: int
    pad_y: int
    src: tuple[int, int]
    dst: tuple[int, int]

    @staticmethod
    def fit(src: tuple[int, int], dst: tuple[int, int]) -> Letterbox:
        """Largest aspect-preserving fit of ``src`` (h, w) into ``dst`` (H, W), centred."""
        h, w = src
        big_h, big_w = dst
        scale = min(big_h / h, big_w / w)
        new_w, new_h = _resized_size(w, h, scale, big_w, big_h)
        return Letterbox(scale, (big_w - new_w) // 2, (big_h - new_h) // 2, (h, w), (big_h, big_w))

    @property
    def resized(self) -> tuple[int, int]:
        """(h, w) of the resized image inside the network input."""
        new_w, new_h = _resized_size(self.src[1], self.src[0], self.scale, self.dst[1], self.dst[0])
        return new_h, new_w

    def to_network(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy original-image pixels -> (N, 4) xyxy network-input pixels."""
        b = _float(boxes)
        return b * self.scale + np.array([self.pad_x, self.pad_y] * 2, b.dtype)

    def to_original(self, boxes: np.ndarray, clip: bool = False) -> np.ndarray:
        """(N, 4) xyxy network-input pixels -> (N, 4) xyxy original-image pixels.

        With ``clip`` the result is clipped to the original image ``[0, w] x [0, h]``.
        """
        b = _float(boxes)
        out = (b - np.array([self.pad_x, self.pad_y] * 2, b.dtype)) / b.dtype.type(self.scale)
        if clip:
            h, w = self.src
            np.clip(out, 0, np.array([w, h, w, h], b.dtype), out=out)
        return out


def _resized_size(w: int, h: int, scale: float, big_w: int, big_h: int) -> tuple[int, int]:
    return (min(big_w, max(1, round(w * scale))), min(big_h, max(1, round(h * scale))))


def _float(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes)
    dtype = b.dtype if b.dtype in (np.float32, np.float64) else np.float64
    return b.astype(dtype, copy=False)


def check_image(image: object, what: str = "image") -> np.ndarray:
    """Validate a frame: uint8, (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), non-empty."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"{what}: expected a numpy uint8 array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(
            f"{what}: expected dtype uint8 (8-bit pixels), got {image.dtype}; "
            "convert with cv2.convertScaleAbs or (x * 255).astype(np.uint8)"
        )
    shape_ok = image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))
    if not shape_ok:
        raise InputError(
            f"{what}: expected shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"{what}: empty image of shape {image.shape}")
    return image


class Preprocessor:
    """Writes letterboxed, normalized NCHW frames into a preallocated input tensor.

    Args:
        spec: the model's contract (input size, channel order, mean/std).
        dtype: the backend's input dtype (float32, or float16 for fp16 engines).
        slots: batch capacity of the buffer (the backend's max batch).
    """

    def __init__(self, spec: ModelSpec, dtype: np.dtype | type = np.float32, slots: int = 1):
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.spec = spec
        self.dtype = np.dtype(dtype)
        h, w = spec.input_size
        self.buffer = np.empty((slots, 3, h, w), self.dtype)
        self._scale = [1.0 / float(s) for s in spec.std]
        self._shift = [-float(m) / float(s) for m, s in zip(spec.mean, spec.std)]
        self._pad = [PAD_VALUE * a + b for a, b in zip(self._scale, self._shift)]
        self._geometry: list[tuple[int, int, int, int] | None] = [None] * slots
        self._scratch: list[dict[tuple[int, ...], np.ndarray]] = [{} for _ in range(slots)]
        self._f32 = None if self.dtype == np.float32 else np.empty((3, h, w), np.float32)

    @property
    def slots(self) -> int:
        return self.buffer.shape[0]

    def batch(self, n: int) -> np.ndarray:
        """The first ``n`` slots, (n, 3, H, W): a view of the buffer, no copy."""
        return self.buffer[:n]

    def __call__(self, image: np.ndarray, slot: int = 0, pixel_format: str = "BGR") -> Letterbox:
        """Letterbox ``image`` into ``buffer[slot]``; returns the transform.

        image: (H, W) or (H, W, 1) gray, (H, W, 3) in ``pixel_format`` ("BGR" or "RGB"),
        or (H, W, 4) BGRA/RGBA (alpha dropped); uint8.
        """
        image = check_image(image)
        if pixel_format not in PIXEL_FORMATS:
            raise InputError(f"pixel_format must be one of {PIXEL_FORMATS}, got {pixel_format!r}")
        if not 0 <= slot < self.slots:
            raise IndexError(f"slot {slot} out of range for a buffer of {self.slots} slots")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        lb = Letterbox.fit(image.shape[:2], self.spec.input_size)
        new_h, new_w = lb.resized
        geometry = (lb.pad_x, lb.pad_y, new_w, new_h)
        if self._geometry[slot] != geometry:
            for c in range(3):
                self.buffer[slot, c].fill(self._pad[c])
            self._geometry[slot] = geometry

        if image.shape[:2] == (new_h, new_w):
            small = image
        else:
            key = (new_h, new_w, *image.shape[2:])
            scratch = self._scratch[slot].get(key)
            if scratch is None:
                self._scratch[slot] = {key: np.empty(key, np.uint8)}  # one geometry kept
                scratch = self._scratch[slot][key]
            small = cv2.resize(image, (new_w, new_h), dst=scratch, interpolation=cv2.INTER_LINEAR)

        planes = [small] * 3 if small.ndim == 2 else cv2.split(small)
        same_order = pixel_format == self.spec.pixel_format
        order = (0, 1, 2) if same_order or small.ndim == 2 else (2, 1, 0)
        ys = slice(lb.pad_y, lb.pad_y + new_h)
        xs = slice(lb.pad_x, lb.pad_x + new_w)
        target = self.buffer[slot] if self._f32 is None else self._f32
        for c in range(3):
            plane = planes[order[c]]
            dst = target[c, ys, xs]
            out = cv2.addWeighted(
                plane, self._scale[c], plane, 0.0, self._shift[c], dst=dst, dtype=cv2.CV_32F
            )
            if out is not dst:  # OpenCV could not write into the strided view
                dst[...] = out
        if self._f32 is not None:
            np.copyto(self.buffer[slot, :, ys, xs], self._f32[:, ys, xs], casting="same_kind")
        return lb
