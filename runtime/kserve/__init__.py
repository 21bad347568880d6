"""The KServe v2 / Triton gRPC inference protocol (``inference.GRPCInferenceService``),
served beside ``understudy.v1.Detector`` on the same port: see :mod:`runtime.kserve.service`
and docs/protocol.md."""
