"""benchmarks.peer without Ultralytics: the dataset view it trains on, the epoch budget,
reading Ultralytics' files, the command line, the scoring path of a single-output YOLO ONNX,
and the whole chain against a stand-in ``yolo`` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from benchmarks import peer
from runtime.data.dataset import load_split
from runtime.errors import ConfigError, MissingPackage, ModelFileError
from runtime.preprocess import Letterbox
from tests.runtime.tiny_models import IR_VERSION, OPSET


def yolo_onnx(path: Path, size: int, output: np.ndarray) -> Path:
    """A single-output YOLO-layout detector (Ultralytics' export): input ``images`` (1, 3,
    size, size), output ``output0`` = the constant ``output`` (1, 4 + C, A), and the class
    names in its ``names`` metadata as Ultralytics writes them."""
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["const", "z"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "yolo-like",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))],
        initializer=[
            numpy_helper.from_array(output.astype(np.float32), "const"),
            numpy_helper.from_array(np.array(0, np.float32), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    names = {i: f"class{i}" for i in range(output.shape[1] - 4)}
    helper.set_model_props(model, {"names": repr(names)})
    onnx.save(model, str(path))
    return path


def test_view_gives_ultralytics_the_projects_images_and_boxes(
    tiny_data: Path, tmp_path: Path
) -> None:
    train, val = load_split(tiny_data, "train"), load_split(tiny_data, "val")
    data_yaml = peer.write_view({"train": peer.first(train, 5), "val": val}, tmp_path / "v")
    doc = yaml.safe_load(data_yaml.read_text())
    assert doc["path"] == str((tmp_path / "v").resolve()) and Path(doc["path"]).is_absolute()
    assert doc["train"] == "images/train" and doc["val"] == "images/val"
    assert doc["names"] == dict(enumerate(val.class_names))
    assert len(list((tmp_path / "v" / "images" / "train").iterdir())) == 5
    # Ultralytics' rule: the label of images/<split>/x.jpg is labels/<split>/x.txt
    for image in (tmp_path / "v" / "images" / "val").iterdir():
        assert (tmp_path / "v" / "labels" / "val" / image.with_suffix(".txt").name).is_file()
    again = load_split(data_yaml, "val")  # read back the project's way: the same boxes
    assert [r.path.resolve() for r in again.records] == [r.path.resolve() for r in val.records]
    for a, b in zip(again.records, val.records):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_array_equal(a.classes, b.classes)
    peer.write_view({"train": peer.first(train, 2), "val": val}, tmp_path / "v")  # a rerun
    assert len(list((tmp_path / "v" / "images" / "train").iterdir())) == 2


def test_epoch_budget_from_the_first_epoch() -> None:
    assert peer.plan_epochs(61, 200) == 18  # 3660 s / 200 s = 18.3: whole epochs that fit
    assert peer.plan_epochs(1, 200) == 1  # at least one
    with pytest.raises(ConfigError, match="--minutes"):
        peer.plan_epochs(0, 10)


def test_reads_ultralytics_results_and_checks_its_settings(tmp_path: Path) -> None:
    csv = tmp_path / "results.csv"
    csv.write_text(
        "       epoch,        time,  metrics/mAP50(B),  metrics/mAP50-95(B)\n"
        "1,100.5,0.2,0.1\n2,190.0,0.5,0.31\n"
    )
    rows = peer.read_results_csv(csv)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1][peer.CSV_MAP] == 0.31
    assert rows[0][peer.CSV_TIME] == 100.5
    csv.write_text("epoch,box_loss\n1,0.5\n")
    with pytest.raises(ModelFileError, match="time"):
        peer.read_results_csv(csv)
    with pytest.raises(ModelFileError, match=r"no results\.csv"):
        peer.read_results_csv(tmp_path / "missing.csv")
    args_yaml = tmp_path / "args.yaml"
    args_yaml.write_text("epochs: 16\nimgsz: 256\nbatch: 16\nclose_mosaic: 10\npretrained: false\n")
    assert peer.check_args(args_yaml, {"epochs": 16, "pretrained": False})["imgsz"] == 256
    with pytest.raises(ConfigError, match=r"close_mosaic=10 \(asked 2\)"):
        peer.check_args(args_yaml, {"close_mosaic": 2, "imgsz": 256})


def test_train_command_carries_the_benchmark_settings(tmp_path: Path) -> None:
    args = peer.build_parser().parse_args([])
    cmd = peer.train_command(
        Path("yolo"), tmp_path / "data.yaml", tmp_path / "runs", "t", peer.train_settings(args, 16)
    )
    assert cmd[:3] == ["yolo", "detect", "train"]
    for expected in (
        "model=yolo11n.yaml",
        "pretrained=False",
        "epochs=16",
        "imgsz=256",
        "batch=16",
        "device=cpu",
        "close_mosaic=2",
        "seed=0",
        "name=t",
        f"data={tmp_path / 'data.yaml'}",
        f"project={tmp_path / 'runs'}",
    ):
        assert expected in cmd
    with pytest.raises(SystemExit):  # one budget or the other
        peer.build_parser().parse_args(["--epochs", "3", "--minutes", "5"])


def test_peer_onnx_is_scored_by_the_projects_evaluation(tiny_data: Path, tmp_path: Path) -> None:
    """A YOLO-layout output that puts a box on every object of the first val image, in the
    letterboxed network pixels: converted and scored, mAP 100; the same boxes with the next
    class: 0."""
    from distill.teachers.yolo import to_decoded_xyxy
    from runtime.model_spec import ModelSpec

    val = peer.first(load_split(tiny_data, "val"), 1)
    (rec,) = val.records
    size, c = 64, len(val.class_names)
    spec = ModelSpec(class_names=val.class_names, input_size=(size, size))
    box = Letterbox.fit((rec.height, rec.width), (size, size)).to_network(rec.boxes)
    out = np.zeros((1, 4 + c, spec.num_anchors), np.float32)
    n = len(box)
    assert n > 0
    out[0, 0, :n], out[0, 1, :n] = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
    out[0, 2, :n], out[0, 3, :n] = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    for right in (True, False):
        out[0, 4:, :n] = 0
        cls = rec.classes if right else (rec.classes + 1) % c
        out[0, 4 + cls, np.arange(n)] = 0.9
        raw = yolo_onnx(tmp_path / f"raw-{right}.onnx", size, out)
        model = to_decoded_xyxy(raw, tmp_path / f"peer-{right}.onnx", spec)
        scored = peer.score(model, val, progress=False)
        assert scored["images"] == 1
        assert scored["map50_95"] == (100.0 if right else 0.0)


FAKE_YOLO = """#!{python}
# A stand-in for Ultralytics' `yolo` command: writes what the benchmark reads.
import json, sys
from pathlib import Path
import numpy as np, yaml
sys.path.insert(0, {root!r})
from tests.distill.test_peer_bench import yolo_onnx
argv = sys.argv[1:]
with open({calls!r}, "a") as f:
    f.write(json.dumps(argv) + "\\n")
kv = dict(a.split("=", 1) for a in argv if "=" in a)
if argv[:2] == ["detect", "train"]:
    out = Path(kv["project"]) / kv["name"]
    (out / "weights").mkdir(parents=True, exist_ok=True)
    (out / "weights" / "last.pt").write_bytes(b"weights")
    args = {{k: yaml.safe_load(v) for k, v in kv.items()}}
    (out / "args.yaml").write_text(yaml.safe_dump(args))
    lines = ["epoch,time,metrics/mAP50(B),metrics/mAP50-95(B)"]
    lines += [f"{{e + 1}},{{10.0 * (e + 1)}},0.5,0.25" for e in range(args["epochs"])]
    (out / "results.csv").write_text("\\n".join(lines) + "\\n")
elif argv[0] == "export":
    size, c = int(kv["imgsz"]), {classes}
    a = sum((size // s) ** 2 for s in (8, 16, 32))
    yolo_onnx(Path(kv["model"]).with_suffix(".onnx"), size, np.zeros((1, 4 + c, a), np.float32))
"""


def fake_side_env(tmp_path: Path, classes: int) -> tuple[Path, Path]:
    """A built side env whose ``yolo`` is the stand-in: (env folder, its calls log)."""
    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    calls = tmp_path / "calls.jsonl"
    yolo = env / "bin" / "yolo"
    yolo.write_text(
        FAKE_YOLO.format(
            python=sys.executable,
            root=str(Path(__file__).parents[2]),
            calls=str(calls),
            classes=classes,
        )
    )
    yolo.chmod(0o755)
    (env / "stamp").write_text("x")
    (env / "versions.txt").write_text("ultralytics 8.4.190\ntorch 2.13.0+cpu\n")
    return env, calls


def test_whole_chain_with_a_stand_in_yolo(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """probe -> planned epochs -> train -> two exports -> scored row in the results file;
    a rerun trains nothing again."""
    env, calls = fake_side_env(tmp_path, len(load_split(tiny_data, "val").class_names))
    monkeypatch.setattr(peer, "SIDE_ENV", env)
    out = tmp_path / "results" / "accuracy.json"
    argv = [
        "--data",
        str(tiny_data),
        "--runs",
        str(tmp_path / "runs"),
        "--minutes",
        "1",
        "--img-size",
        "64",
        "--latency-size",
        "96",
        "--val-images",
        "2",
        "--out",
        str(out),
    ]
    assert peer.main(argv) == 0
    argvs = [json.loads(x) for x in calls.read_text().splitlines()]
    trains = [x for x in argvs if x[:2] == ["detect", "train"]]
    assert len(trains) == 2 and all("model=yolo11n.yaml" in x for x in trains)
    assert [x[0] for x in argvs].count("export") == 2
    assert "epochs=1" in trains[0] and "epochs=6" in trains[1]  # 60 s / a 10 s first epoch
    (row,) = json.loads(out.read_text())["rows"]
    assert row["model"] == "peer-yolo11n" and row["epochs"] == 6 and row["seed"] == 0
    assert row["first_epoch_seconds"] == 10.0 and row["minutes"] == 1.0
    assert row["recipe"] == "1-min"  # its own key: beside the 16-epoch row
    assert row["ultralytics_val_map50_95"] == 25.0 and row["map50_95"] == 0.0
    assert row["val_images"] == 2 and row["train_images"] == 8 and row["img_size"] == 64
    assert row["train_seconds"] > 0 and row["ultralytics"] == "8.4.190"
    assert "python -m benchmarks.peer" in row["command"] and row["machine"]
    assert out.with_suffix(".md").read_text().count("peer-yolo11n") >= 1
    from runtime.backends import open_backend

    latency_onnx = Path(row["latency_onnx"])
    assert latency_onnx == tmp_path / "runs" / "peer-yolo11n.onnx"
    assert open_backend(latency_onnx).spec.input_size == (96, 96)
    n_calls = len(calls.read_text().splitlines())
    assert peer.main(argv) == 0  # resumable: nothing trained or exported again
    assert len(calls.read_text().splitlines()) == n_calls
    assert len(json.loads(out.read_text())["rows"]) == 1


def test_a_side_env_that_cannot_be_built_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "fail.sh"
    script.write_text(
        'mkdir -p "$ULTRALYTICS_SIDE_ENV"\n'
        'echo "side env ultralytics: FAILED at install torch" > "$ULTRALYTICS_SIDE_ENV/FAILED"\n'
        "exit 1\n"
    )
    monkeypatch.setattr(peer, "SIDE_ENV", tmp_path / "env")
    monkeypatch.setattr(peer, "SIDE_ENV_SCRIPT", script)
    with pytest.raises(MissingPackage, match=r"FAILED at install torch.*run bash"):
        peer.ensure_side_env()


def test_yolo11n_reference_is_exported_by_the_side_envs_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.backends import open_backend

    env, calls = fake_side_env(tmp_path, 5)
    monkeypatch.setattr(peer, "SIDE_ENV", env)
    out = peer.export_reference(tmp_path / "cache" / "yolo11n-ref-96.onnx", 96)
    assert out == tmp_path / "cache" / "yolo11n-ref-96.onnx"
    spec = open_backend(out).spec
    assert spec.input_size == (96, 96) and spec.preset == "yolo11n-random-weights"
    assert spec.class_names == tuple(f"class{i}" for i in range(5))  # from its metadata
    (argv,) = [json.loads(x) for x in calls.read_text().splitlines()]
    assert argv[:3] == ["export", "model=yolo11n.yaml", "format=onnx"] and "imgsz=96" in argv
    assert not (tmp_path / "cache" / "yolo11n-ref-96.export").exists()  # its work folder
    assert peer.export_reference(out, 96) == out  # cached: not exported again
    assert len(calls.read_text().splitlines()) == 1
    assert "ultralytics" not in sys.modules  # never imported by the project


def test_yolo11n_reference_without_the_side_env_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(peer, "SIDE_ENV", tmp_path / "missing")
    assert peer.export_reference(tmp_path / "ref.onnx", 96) is None
    assert "scripts/side_env/ultralytics.sh" in capsys.readouterr().out


def test_equal_compute_budget_comes_from_the_teacher_and_student_runs(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--fair RUN: the peer trains for as long as the benchmark teacher and the distilled
    student RUN trained (their logged images at their own throughput), and says so."""
    bench = tmp_path / "bench"
    for run, epochs, ips in (("teacher", 3, 2.0), ("hybrid-s0", 2, 5.0)):
        (bench / run).mkdir(parents=True)
        lines = [{"epoch": e, "step": 10 * (e + 1), "images": 60, "images_per_s": ips}
                 for e in range(epochs)]  # fmt: skip
        (bench / run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    fair = peer.fair_budget(bench / "hybrid-s0")
    # teacher 3 x 60 images at 2/s = 90 s; student 2 x 60 at 5/s = 24 s
    assert (fair["teacher_seconds"], fair["student_seconds"]) == (90.0, 24.0)
    assert fair["minutes"] == 1.9 and fair["teacher_run"] == str(bench / "teacher")
    env, _ = fake_side_env(tmp_path, len(load_split(tiny_data, "val").class_names))
    monkeypatch.setattr(peer, "SIDE_ENV", env)
    out = tmp_path / "accuracy.json"
    argv = ["--data", str(tiny_data), "--runs", str(tmp_path / "runs"), "--fair",
            str(bench / "hybrid-s0"), "--img-size", "64", "--latency-size", "96",
            "--val-images", "2", "--out", str(out)]  # fmt: skip
    assert peer.main(argv) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["recipe"] == "equal-compute" and row["fair"] == fair
    assert row["minutes"] == 1.9 and row["epochs"] == 11  # 114 s / a 10 s first epoch
    with pytest.raises(SystemExit):
        peer.build_parser().parse_args(["--fair", "--minutes", "5"])
