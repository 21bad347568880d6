"""INT8 ONNX models as Q/DQ (static post-training quantization).

``quantize_int8`` runs ONNX Runtime's static post-training quantization in QDQ format:
per-channel symmetric int8 weights (axis 0 of each Conv) and per-tensor activations,
calibrated on N images pre-processed exactly as the runtime does (letterbox, RGB, [0, 1]).
Two activation types, because the two consumers want different things:

- ``activations="int8"`` (default, TensorRT): symmetric INT8 (zero point 0), Q/DQ only on
  the inputs of Conv layers (activations and weights), float bias. This is the placement
  TensorRT's explicit quantization fuses best (int8 Conv with a fused float epilogue); it
  also runs in ONNX Runtime, but ONNX Runtime on x86 does not fuse signed activations, so
  it is *slower* there than fp32.
- ``activations="uint8"`` (ONNX Runtime on x86 CPUs): asymmetric UINT8 activations, Q/DQ
  around every quantizable op and int32 bias, which ONNX Runtime fuses into QLinearConv /
  QLinearMul / ... kernels. TensorRT rejects UINT8 Q/DQ (``compile --check`` flags it).

Sensitive layers stay float: by default the head's final 1x1 convs (class logits and box
bins) and the decode tail after them (softmax, DFL expectation, box arithmetic, sigmoid).

fp16 needs no file of its own: the engine build converts in memory where TensorRT wants it
(:mod:`runtime.engine.fp16`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from runtime.engine.onnx_io import load_onnx, onnx_spec, save_onnx_atomic, set_metadata
from runtime.errors import ConfigError, DataError
from runtime.files import ensure_writable
from runtime.model_spec import ModelSpec

log = logging.getLogger(__name__)

METHODS = ("minmax", "percentile", "entropy")
ACTIVATIONS = ("int8", "uint8")
HEAD_PATTERNS = ("/model/head/*.2/Conv",)  # last conv of each box/cls branch (export names)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class QuantizeReport:
    """What ``quantize_int8`` wrote."""

    path: Path
    sidecar: Path
    spec: ModelSpec
    method: str
    activations: str
    num_images: int
    excluded: list[str]  # node names kept in float
    op_counts: dict[str, int]  # op census of the Q/DQ graph
    quantized_convs: int
    float_convs: int
    preprocessed: str  # "quant_pre_process" or why it was skipped

    def summary(self) -> str:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.op_counts.items()))
        return (
            f"wrote {self.path} (+ {self.sidecar.name}): {self.activations} activations, "
            f"{self.method} calibration on {self.num_images} images, pre-processing: "
            f"{self.preprocessed}\nconvs: {self.quantized_convs} int8, {self.float_convs} float "
            f"({len(self.excluded)} nodes kept float)\nops: {ops}"
        )


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def calibration_paths(source: Any, num_images: int, seed: int = 0) -> list[Path]:
    """Up to ``num_images`` image paths, spread over ``source`` (seeded choice).

    ``source``: a list of image paths; a folder of images; or a dataset (a DatasetSplit,
    or a path :func:`runtime.data.dataset.load_split` reads; its ``train`` split is used).
    """
    if isinstance(source, (list, tuple)):
        paths = [Path(p) for p in source]
    elif hasattr(source, "records"):
        paths = [r.path for r in source.records]
    else:
        p = Path(source)
        if p.is_dir() and not (p / "data.yaml").is_file():
            paths = _image_files(p)
        else:
            from runtime.data.dataset import load_split

            paths = [r.path for r in load_split(p, "train").records]
    if not paths:
        raise DataError(f"{source}: no calibration images found ({', '.join(IMAGE_SUFFIXES)})")
    if len(paths) > num_images:
        pick = np.sort(np.random.default_rng(seed).choice(len(paths), num_images, replace=False))
        paths = [paths[i] for i in pick]
    return paths


class CalibrationReader:
    """ONNX Runtime ``CalibrationDataReader``: one (1, 3, H, W) batch per image, letterboxed
    and normalized by :class:`runtime.preprocess.Preprocessor`; a tqdm bar counts images."""

    def __init__(self, paths: Sequence[Path], spec: ModelSpec, input_name: str) -> None:
        from tqdm import tqdm

        from runtime.preprocess import Preprocessor

        self.paths = list(paths)
        self.input_name = input_name
        self._pre = Preprocessor(spec, slots=1)
        self._next = 0
        self._bar = tqdm(total=len(self.paths), desc="calibrating", unit="img", leave=False)

    def get_next(self) -> dict[str, np.ndarray] | None:
        import cv2

        if self._next >= len(self.paths):
            self._bar.close()
            return None
        path = self.paths[self._next]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"{path}: not a readable image (calibration)")
        self._pre(image, 0, "BGR")
        self._next += 1
        self._bar.update(1)
        return {self.input_name: self._pre.batch(1).copy()}

    def rewind(self) -> None:
        self._next = 0


def match_nodes(model: onnx.ModelProto, patterns: Sequence[str]) -> list[str]:
    """Names of nodes matching any glob pattern (``fnmatch``; ``*`` also matches ``/``)."""
    return [
        n.name for n in model.graph.node if any(fnmatch.fnmatchcase(n.name, p) for p in patterns)
    ]


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """The head's final convs (:data:`HEAD_PATTERNS`) and every node downstream of them."""
    roots = set(match_nodes(model, HEAD_PATTERNS))
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found, stack = set(roots), [o for n in model.graph.node if n.name in roots for o in n.output]
    while stack:
        for node in consumers.get(stack.pop(), []):
            if node.name not in found:
                found.add(node.name)
                stack.extend(node.output)
    return [n.name for n in model.graph.node if n.name in found]


def qdq_census(model: onnx.ModelProto) -> tuple[dict[str, int], int, int]:
    """(op counts, convs whose weight comes through DequantizeLinear, float convs)."""
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    quantized = sum(1 for n in convs if n.input[1] in dq_out)
    return dict(Counter(n.op_type for n in model.graph.node)), quantized, len(convs) - quantized


def _preprocess(src: Path, dst: Path) -> tuple[Path, str]:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst))
        return dst, "quant_pre_process"
    except Exception as e:  # a pre-processing failure only costs the folding it would do
        log.warning("quant_pre_process failed (%s); quantizing the model as exported", e)
        return src, f"skipped ({type(e).__name__})"


def speed_hint(activations: str, flags: set[str]) -> str:
    """One line on whether ONNX Runtime on this CPU (its feature ``flags``) should run the
    ``activations`` variant faster than fp32. The int8 gain of ONNX Runtime's x86 kernels
    comes from VNNI (AVX-512 VNNI or AVX-VNNI) dot products; without it they gain nothing."""
    vnni = bool(flags & {"avx512_vnni", "avx_vnni"})
    if not flags:
        return "CPU features unknown: measure fp32 vs int8 with `python -m benchmarks.latency`"
    if activations == "int8":
        return (
            "this is the TensorRT placement (symmetric int8 on convolution inputs): build it "
            "with `understudy compile --precision int8`; ONNX Runtime on a CPU does not run it "
            "faster than fp32 (use --activations uint8 for that)"
        )
    if vnni:
        return "this CPU has VNNI: ONNX Runtime's int8 kernels should beat fp32 here"
    return (
        "this CPU has no VNNI (AVX-512 VNNI or AVX-VNNI): ONNX Runtime's int8 kernels are not "
        "expected to beat fp32 here; measure with `python -m benchmarks.latency` before "
        "deploying it on this kind of CPU"
    )


def _float_nodes(
    model: onnx.ModelProto, keep_float: Sequence[str], keep_head_float: bool, source: Path
) -> list[str]:
    """Names of the nodes left in float: the head's last convs (``keep_head_float``) and
    every node matching a ``keep_float`` glob (ConfigError for a glob matching none)."""
    excluded = head_nodes(model) if keep_head_float else []
    for pattern in keep_float:
        hits = match_nodes(model, [pattern])
        if not hits:
            raise ConfigError(f"--keep-float {pattern!r} matches no node of {source}")
        excluded += [h for h in hits if h not in excluded]
    return excluded


def _quantize_static(
    src: Path,
    dst: Path,
    reader: CalibrationReader,
    excluded: list[str],
    method: str,
    per_channel: bool,
    tensorrt: bool,
) -> None:
    """ONNX Runtime's static Q/DQ quantization: symmetric int8 on convolution inputs for
    TensorRT (``tensorrt``), else uint8 activations around every op (x86 ONNX Runtime)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[method]
    quantize_static(
        str(src),
        str(dst),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["Conv"] if tensorrt else None,
        per_channel=per_channel,
        activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
        calibrate_method=calibrate,
        calibration_providers=["CPUExecutionProvider"],
        extra_options={
            "ActivationSymmetric": tensorrt,
            "WeightSymmetric": True,
            "QuantizeBias": not tensorrt,
        },
    )


def quantize_int8(
    onnx_in: str | Path,
    onnx_out: str | Path,
    calibration_images: Any,
    num_images: int = 128,
    method: str = "minmax",
    keep_float: Sequence[str] = (),
    keep_head_float: bool = True,
    per_channel: bool = True,
    activations: str = "int8",
    preprocess: bool = True,
) -> QuantizeReport:
    """Static post-training quantization of an Understudy ONNX model to a Q/DQ model.

    Args:
        calibration_images: image paths, a folder of images, or a dataset (see
            :func:`calibration_paths`); ``num_images`` of them are used.
        method: ``minmax`` | ``percentile`` | ``entropy`` (ONNX Runtime calibrators).
        keep_float: extra node-name globs kept in float (e.g. ``/model/backbone/*``).
        keep_head_float: keep the head's final convs and the decode tail in float.
        activations: ``int8`` (TensorRT) or ``uint8`` (ONNX Runtime on x86), see above.
        preprocess: run ONNX Runtime's ``quant_pre_process`` (shape inference and
            constant folding; node names are kept) first; skipped with a warning if it fails.

    Raises ModelFileError (bad input file), DataError (no/unreadable images),
    ConfigError (bad method/activations/pattern), UnderstudyError (unwritable output).
    """
    if method not in METHODS:
        raise ConfigError(f"calibration method must be one of {METHODS}, got {method!r}")
    if activations not in ACTIVATIONS:
        raise ConfigError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
    if num_images < 1:
        raise ConfigError(f"--num-images must be >= 1, got {num_images}")
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    model = load_onnx(onnx_in)
    spec = onnx_spec(model, onnx_in)
    ensure_writable(onnx_out)
    paths = calibration_paths(calibration_images, num_images)
    tensorrt = activations == "int8"
    with tempfile.TemporaryDirectory(prefix="understudy-quant-") as tmp:
        src, prep = _preprocess(onnx_in, Path(tmp) / "pre.onnx") if preprocess else (onnx_in, "off")
        float_model = onnx.load(str(src))
        excluded = _float_nodes(float_model, keep_float, keep_head_float, onnx_in)
        reader = CalibrationReader(paths, spec, float_model.graph.input[0].name)
        out_tmp = Path(tmp) / "int8.onnx"
        _quantize_static(src, out_tmp, reader, excluded, method, per_channel, tensorrt)
        qmodel = onnx.load(str(out_tmp))
    counts, n_int8, n_float = qdq_census(qmodel)
    info = {
        "method": method,
        "activations": activations,
        "num_images": len(paths),
        "per_channel": per_channel,
        "kept_float": len(excluded),
        "source_onnx": str(onnx_in),
    }
    qspec = dataclasses.replace(spec, precision="int8", extra={**spec.extra, "quantization": info})
    set_metadata(qmodel, qspec)
    save_onnx_atomic(qmodel, onnx_out)
    sidecar = qspec.write_sidecar(onnx_out)
    return QuantizeReport(
        onnx_out,
        sidecar,
        qspec,
        method,
        activations,
        len(paths),
        excluded,
        counts,
        n_int8,
        n_float,
        prep,
    )
