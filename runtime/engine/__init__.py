"""Deploy-time model work that runs on the device (no torch): from an exported ONNX file to
a TensorRT engine.

- :mod:`runtime.engine.onnx_io`: read an ONNX file with a clear error, its ModelSpec,
  metadata, atomic save;
- :mod:`runtime.engine.preflight`: the TensorRT pre-flight check (op list as data in
  ``tensorrt_onnx_ops.json``), no TensorRT needed;
- :mod:`runtime.engine.fp16`: fp16 conversion for TensorRT 11's strongly typed networks;
- :mod:`runtime.engine.environment`: the ``tensorrt`` module, TensorRT version and GPU;
- :mod:`runtime.engine.build`: one engine build (precision, batch profile, progress);
- :mod:`runtime.engine.cache`: the engine cache (build once per ONNX/TensorRT/GPU/precision).

``understudy compile`` (``runtime/commands/compile.py``) and the TensorRT backend's
``.onnx`` path use them; export and quantize (offline, in ``distill``) use ``onnx_io`` and
the pre-flight check.
"""
