"""Bearer-token authentication for the gRPC server.

With a token configured, every call must carry ``authorization: Bearer <token>``
metadata or gets UNAUTHENTICATED, except the methods under ``OPEN_METHOD_PREFIXES``
(``grpc.health.v1.Health``), which stay open so that load balancers and orchestrators can
probe readiness without the secret (health reveals only SERVING / NOT_SERVING). The token
is compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from runtime.errors import ConfigError

HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
OPEN_METHOD_PREFIXES = (f"/{HEALTH_SERVICE_NAME}/",)


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Require ``authorization: Bearer <token>`` on every method but the open ones."""

    def __init__(self, token: str, open_prefixes: tuple[str, ...] = OPEN_METHOD_PREFIXES) -> None:
        if not token:
            raise ConfigError("the bearer token must not be empty")
        self._expected = f"Bearer {token}".encode()
        self._open = open_prefixes

    def intercept_service(self, continuation: Callable, details: Any) -> Any:
        if details.method.startswith(self._open):
            return continuation(details)
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                got = value.encode() if isinstance(value, str) else bytes(value)
                if hmac.compare_digest(got, self._expected):
                    return continuation(details)
        handler = continuation(details)
        return None if handler is None else _denying_handler(handler)


def _denying_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    message = "missing or invalid bearer token: send metadata 'authorization: Bearer <token>'"

    def deny(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(bool(handler.request_streaming), bool(handler.response_streaming))]
    return make(
        deny,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
