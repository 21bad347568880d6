"""Auth (bearer token), TLS, message-size limit and server configuration errors."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from runtime.client import DetectorClient
from runtime.errors import ConfigError
from runtime.proto import pb
from runtime.server import build_server
from runtime.server_config import ServerConfig
from tests.runtime.serving_fakes import FakeDetector, make_self_signed, running, solid

pytestmark = pytest.mark.timeout(30)
TOKEN = "s3cret-token"


def _code(fn) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code()


def test_token_required_when_configured() -> None:
    with running(FakeDetector(), token=TOKEN) as (srv, anonymous):
        target = f"127.0.0.1:{srv.port}"
        wrong = DetectorClient(target, token="nope", timeout=5)
        for client in (anonymous, wrong):
            assert _code(lambda c=client: c.detect(solid(1))) == grpc.StatusCode.UNAUTHENTICATED
            assert _code(client.model_info) == grpc.StatusCode.UNAUTHENTICATED
            stream = client.stream([solid(1)])
            assert _code(lambda s=stream: list(s)) == grpc.StatusCode.UNAUTHENTICATED
            assert client.health() == "SERVING"  # health stays open for probes
        wrong.close()
        with DetectorClient(target, token=TOKEN, timeout=5) as good:
            assert good.detect(solid(1)).detections[0].label == "car"
            assert good.model_info().backend == "fake"
            assert next(iter(good.stream([solid(1)], budget_ms=10_000))).HasField("result")


def test_reflection_needs_the_token_too() -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with running(FakeDetector(), token=TOKEN) as (_srv, anonymous):
        db = ProtoReflectionDescriptorDatabase(anonymous.channel)
        assert _code(db.get_services) == grpc.StatusCode.UNAUTHENTICATED


def test_no_token_configured_means_open() -> None:
    with running(FakeDetector(), client_kw={"token": "ignored"}) as (_srv, client):
        assert client.detect(solid(1)).frame_id == 0


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pair = make_self_signed(tmp_path_factory.mktemp("tls"))
    if pair is None:
        pytest.skip("openssl is not available to generate a self-signed certificate")
    return pair


def test_tls_with_self_signed_cert(cert_pair: tuple[Path, Path]) -> None:
    cert, key = cert_pair
    config = {"tls_cert": str(cert), "tls_key": str(key), "token": TOKEN}
    with running(FakeDetector(), client_kw={"tls_ca": str(cert), "token": TOKEN}, **config) as (
        srv,
        client,
    ):
        r = client.detect(solid(1), frame_id=7)
        assert r.frame_id == 7
        answer = next(iter(client.stream([solid(2)], budget_ms=10_000)))
        assert answer.result.detections[0].label == "dog"
        with DetectorClient(f"localhost:{srv.port}", tls_ca=str(cert), token=TOKEN, timeout=5) as c:
            assert c.health() == "SERVING"
        with DetectorClient(f"127.0.0.1:{srv.port}", token=TOKEN, timeout=2) as plain:
            assert _code(lambda: plain.detect(solid(1))) == grpc.StatusCode.UNAVAILABLE


def test_tls_token_refused_without_or_with_a_wrong_token(cert_pair: tuple[Path, Path]) -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    cert, key = cert_pair
    config = {"tls_cert": str(cert), "tls_key": str(key), "token": TOKEN}
    with running(FakeDetector(), client_kw={"tls_ca": str(cert)}, **config) as (srv, anonymous):
        wrong = DetectorClient(f"127.0.0.1:{srv.port}", tls_ca=str(cert), token="x", timeout=5)
        for client in (anonymous, wrong):
            assert _code(lambda c=client: c.detect(solid(1))) == grpc.StatusCode.UNAUTHENTICATED
            stream = client.stream([solid(1)])
            assert _code(lambda s=stream: list(s)) == grpc.StatusCode.UNAUTHENTICATED
            assert client.health() == "SERVING"  # health stays open over TLS too
            db = ProtoReflectionDescriptorDatabase(client.channel)
            assert _code(db.get_services) == grpc.StatusCode.UNAUTHENTICATED
        wrong.close()


@pytest.mark.parametrize(
    ("host", "tls", "warned"),
    [("0.0.0.0", False, True), ("127.0.0.1", False, False), ("0.0.0.0", True, False)],
)
def test_plain_tcp_token_warning(
    host: str, tls: bool, warned: bool, cert_pair: tuple[Path, Path], caplog
) -> None:
    cert, key = cert_pair
    config = {"host": host, "token": TOKEN}
    if tls:
        config |= {"tls_cert": str(cert), "tls_key": str(key)}
    with caplog.at_level("WARNING", logger="runtime.server"):
        server = build_server(FakeDetector(), ServerConfig(port=0, **config))
        server.stop(0.5)
    assert ("can be sniffed" in caplog.text) == warned


def test_message_size_limit() -> None:
    with running(FakeDetector(), max_message_mb=0.01) as (_srv, client):
        assert _code(lambda: client.detect(solid(1, 64, 64), encode="raw")) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        assert client.detect(solid(1, 8, 8), encode="raw").image_width == 8


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"policy": "lifo"}, "--policy"),
        ({"budget_ms": 0}, "--budget-ms"),
        ({"max_streams": 0}, "--max-streams"),
        ({"tls_cert": "cert.pem"}, "together"),
        (
            {"tls_cert": "/nonexistent/cert.pem", "tls_key": "/nonexistent/key.pem"},
            "cannot be read",
        ),
    ],
)
def test_bad_config_rejected(kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_server(FakeDetector(), ServerConfig(port=0, **kw))


def test_port_in_use_is_a_config_error() -> None:
    with running(FakeDetector()) as (srv, _client), pytest.raises(ConfigError, match="in use"):
        build_server(FakeDetector(), ServerConfig(port=srv.port))


def test_client_missing_ca_file() -> None:
    with pytest.raises(ConfigError, match="--tls-ca"):
        DetectorClient("127.0.0.1:1", tls_ca="/nonexistent/ca.pem")


def test_frame_proto_budget_is_signed() -> None:
    assert pb.Frame(budget_ms=-1.0).budget_ms == -1.0
