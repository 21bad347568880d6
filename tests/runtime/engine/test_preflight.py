"""Pre-flight check of ONNX files for TensorRT (no TensorRT needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime.cli import main
from runtime.engine.onnx_io import load_onnx
from runtime.engine.preflight import check_file, check_model, operator_list
from runtime.errors import ModelFileError


def tiny_model(
    *,
    extra_nodes: list[onnx.NodeProto] = (),
    extra_inits: list[onnx.TensorProto] = (),
    input_dims: list[int | str] = ("batch", 3, 32, 32),
    out_name: str = "y",
) -> onnx.ModelProto:
    """images (B, 3, 32, 32) -> Conv 3x3 (named /conv/Conv) -> Sigmoid -> y (+ extras)."""
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32) / 27, "w")
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["c"], name="/conv/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], [out_name], name="/act/Sigmoid"),
        *extra_nodes,
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, list(input_dims))],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [input_dims[0], 4, 32, 32])],
        [w, *extra_inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def problems_of(model: onnx.ModelProto, **kw) -> list[tuple[str, str]]:
    return [(p.node, p.op) for p in check_model(model, **kw).problems]


def test_operator_list_is_data_with_a_version() -> None:
    ops = operator_list()
    assert ops["tensorrt_version"].startswith("10.")
    assert {"Conv", "Resize", "Concat", "QuantizeLinear", "Softmax"} <= set(ops["supported"])
    assert not set(ops["supported"]) & set(ops["unsupported"])


def test_clean_model_passes() -> None:
    report = check_model(tiny_model())
    assert report.ok, report.table()
    assert report.opset == 17
    assert report.batch_profile == (1, 8)
    assert report.op_status == {"Conv": "ok", "Sigmoid": "ok"}


def test_unsupported_unknown_and_custom_ops_are_named() -> None:
    extra = [
        helper.make_node("Unique", ["y"], ["u"], name="/post/Unique"),
        helper.make_node("FancyOp", ["y"], ["f"], name="/post/Fancy"),
        helper.make_node("Gelu", ["y"], ["g"], name="/post/Gelu", domain="com.microsoft"),
    ]
    found = problems_of(tiny_model(extra_nodes=extra))
    assert ("/post/Unique", "Unique") in found
    assert ("/post/Fancy", "FancyOp") in found
    assert ("/post/Gelu", "com.microsoft::Gelu") in found
    status = check_model(tiny_model(extra_nodes=extra)).op_status
    assert status["Unique"] == "unsupported" and status["FancyOp"] == "unknown"


def test_float64_everywhere_is_flagged() -> None:
    d = numpy_helper.from_array(np.ones(4, np.float64), "bias64")
    extra = [
        helper.make_node("Cast", ["y"], ["y64"], name="/to64/Cast", to=TensorProto.DOUBLE),
        helper.make_node(
            "Constant",
            [],
            ["k"],
            name="/k/Constant",
            value=numpy_helper.from_array(np.ones(2, np.float64), "kv"),
        ),
    ]
    found = problems_of(tiny_model(extra_nodes=extra, extra_inits=[d]))
    assert ("/to64/Cast", "Cast") in found
    assert ("/k/Constant", "Constant") in found
    assert ("bias64", "initializer") in found


def test_dynamic_dims_only_on_the_batch_axis() -> None:
    found = problems_of(tiny_model(input_dims=["batch", 3, "height", 32]))
    assert found == [("images", "input")]
    report = check_model(tiny_model(input_dims=["batch", 3, "height", 32]))
    assert "axis 2" in report.problems[0].what
    # a dynamic batch is covered by the profile that will be built
    assert check_model(tiny_model(), min_batch=2, max_batch=4).batch_profile == (2, 4)


def test_static_batch_cannot_serve_a_batch_range() -> None:
    model = tiny_model(input_dims=[1, 3, 32, 32])
    assert check_model(model).ok
    assert check_model(model, min_batch=1, max_batch=1).ok
    found = check_model(model, max_batch=4).problems
    assert len(found) == 1 and "--dynamic-batch" in found[0].what


def test_qdq_types_tensorrt_rejects() -> None:
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp_u8 = numpy_helper.from_array(np.array(128, np.uint8), "zu")
    zp_i8 = numpy_helper.from_array(np.array(3, np.int8), "zi")
    extra = [
        helper.make_node("QuantizeLinear", ["y", "s", "zu"], ["q1"], name="/q/u8"),
        helper.make_node("QuantizeLinear", ["y", "s", "zi"], ["q2"], name="/q/zp3"),
    ]
    found = check_model(tiny_model(extra_nodes=extra, extra_inits=[scale, zp_u8, zp_i8])).problems
    whats = {p.node: p.what for p in found}
    assert "UINT8" in whats["/q/u8"] and "zero point" in whats["/q/zp3"]


def test_cli_check_exit_codes_and_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx.save(tiny_model(), good)
    extra = [helper.make_node("Unique", ["y"], ["u"], name="/post/Unique")]
    onnx.save(tiny_model(extra_nodes=extra, input_dims=["b", 3, 32, "w"]), bad)
    assert main(["compile", "--check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "no problems" in out and "TensorRT 10.3" in out and "Conv" in out
    assert main(["compile", "--check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "/post/Unique (Unique)" in out
    assert "images (input): dynamic dim 'w' on axis 3" in out


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_onnx_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture, cut: float
) -> None:
    full = tiny_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(full[: int(len(full) * cut)])
    assert main(["compile", "--check", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err
    with pytest.raises(ModelFileError, match=r"cut\.onnx"):
        load_onnx(path)


def test_missing_and_garbage_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["compile", "--check", str(tmp_path / "nope.onnx")]) == 2
    assert "nope.onnx: ONNX file not found" in capsys.readouterr().err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not an onnx file at all" * 10)
    with pytest.raises(ModelFileError, match=r"junk\.onnx"):
        check_file(junk)
