"""`understudy serve --unix-socket PATH`: the server also listens on a Unix domain socket
and clients dial it as ``unix:PATH`` (Detect and StreamDetect), beside the TCP port."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest

from runtime.client import DetectorClient
from runtime.errors import ConfigError
from runtime.server import build_server
from runtime.server_config import ServerConfig
from tests.runtime.serving_fakes import FakeDetector, make_self_signed, running, solid

pytestmark = pytest.mark.timeout(60)


def test_clients_dial_the_unix_socket_and_tcp_still_answers(tmp_path: Path) -> None:
    path = tmp_path / "serve.sock"
    # policy "queue": every frame is answered (keep-latest may replace one sent while busy)
    with running(FakeDetector(), unix_socket=str(path), policy="queue") as (server, tcp):
        assert path.is_socket()
        assert server.unix_target == f"unix:{path}"
        with DetectorClient(f"unix:{path}", timeout=10) as client:
            assert client.health() == "SERVING"
            assert len(client.detect(solid(1, h=40, w=80)).detections) == 1
            with client.open_stream(camera_id="cam", encode="raw") as call:
                for i in range(3):
                    call.send(solid(i), frame_id=i)
                call.close()
                kinds = [r.WhichOneof("kind") for r in call]
            assert kinds == ["result"] * 3
        assert len(tcp.detect(solid(2)).detections) == 1  # the TCP port serves as before


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "serve.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # left behind by a server that was killed
    stale.close()
    assert path.is_socket()
    with (
        running(FakeDetector(), unix_socket=str(path)),
        DetectorClient(f"unix:{path}", timeout=10) as client,
    ):
        assert client.health() == "SERVING"


@pytest.mark.parametrize(
    ("where", "message"),
    [("missing/serve.sock", "does not exist"), ("plain-file", "not a socket")],
)
def test_a_path_that_cannot_be_a_socket_is_a_config_error(
    tmp_path: Path, where: str, message: str
) -> None:
    (tmp_path / "plain-file").write_text("keep me")
    config = ServerConfig(port=0, unix_socket=str(tmp_path / where))
    with pytest.raises(ConfigError, match=f"--unix-socket .*{message}"):
        build_server(FakeDetector(), config)
    assert (tmp_path / "plain-file").read_text() == "keep me"


def test_the_serve_flag_sets_the_socket() -> None:
    from runtime.cli import build_parser
    from runtime.commands.serve import server_config

    args = build_parser().parse_args(
        ["serve", "--model", "m.onnx", "--unix-socket", "/run/understudy.sock"]
    )
    config, _ = server_config(args)
    assert config.unix_socket == "/run/understudy.sock"
    default, _ = server_config(build_parser().parse_args(["serve", "--model", "m.onnx"]))
    assert default.unix_socket is None


def test_tls_and_the_token_apply_on_the_socket_too(tmp_path: Path) -> None:
    token = "s3cret"
    pair = make_self_signed(tmp_path)
    if pair is None:
        pytest.skip("openssl is not available to generate a self-signed certificate")
    cert, key = pair
    path = tmp_path / "serve.sock"
    config = {"tls_cert": str(cert), "tls_key": str(key), "token": token}
    with running(
        FakeDetector(),
        client_kw={"tls_ca": str(cert), "token": token},
        unix_socket=str(path),
        **config,
    ):
        target = f"unix:{path}"
        name = {"tls_server_name": "localhost"}  # the certificate's name, not the socket's
        with DetectorClient(target, tls_ca=str(cert), token=token, timeout=5, **name) as client:
            assert client.detect(solid(1), frame_id=3).frame_id == 3
        with DetectorClient(target, tls_ca=str(cert), timeout=5, **name) as anonymous:
            with pytest.raises(grpc.RpcError) as e:
                anonymous.detect(solid(1))
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with DetectorClient(target, token=token, timeout=2) as plain:
            with pytest.raises(grpc.RpcError) as e:
                plain.detect(solid(1))
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
