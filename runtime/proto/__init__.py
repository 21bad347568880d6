"""Generated protobuf/gRPC stubs for ``understudy.v1`` (regenerate with
``python runtime/proto/generate.py``; ``tests/runtime/test_proto.py`` fails when they are stale).

Use ``from runtime.proto import pb, pb_grpc``: ``pb`` holds the messages
(``pb.Frame``, ``pb.DetectResponse``, ...) and ``pb_grpc`` the service stub/servicer.
"""

from runtime.proto.understudy.v1 import detector_pb2 as pb
from runtime.proto.understudy.v1 import detector_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Detector"].full_name

__all__ = ["SERVICE_NAME", "pb", "pb_grpc"]
