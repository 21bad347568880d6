"""The training loop: checkpoints, resume, determinism, DDP, bad checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.checkpoint import load_detector, read_checkpoint
from distill.config import load
from distill.data.torch_dataset import DetectionDataset
from distill.train import train
from distill.train_config import TrainConfig
from runtime.cli import main
from runtime.errors import ModelFileError

BASE = ["model=nano", "img_size=64", "batch_size=4", "bf16=off"]


def cfg(*extra: str) -> TrainConfig:
    return load(TrainConfig, None, BASE + list(extra))


def test_checkpoint_contents(tiny_checkpoint: Path) -> None:
    ckpt = read_checkpoint(tiny_checkpoint)
    assert "train_state" not in ckpt  # model.pt holds only the model
    assert ckpt["preset"] == "nano" and ckpt["img_size"] == 64
    assert ckpt["class_names"][:2] == ["disc", "ring"]
    assert {"map50_95", "map50", "train_seconds"} <= set(ckpt["metrics"])
    last = read_checkpoint(tiny_checkpoint.parent / "last.pt")
    assert {"model_raw", "optimizer", "epoch", "step"} <= set(last["train_state"])
    model, info = load_detector(tiny_checkpoint)
    assert not model.training and "model" not in info
    lines = (tiny_checkpoint.parent / "metrics.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    assert record["epoch"] == 1 and record["step"] == 2 and "loss_box" in record


def test_seeded_runs_are_reproducible(tmp_path: Path, tiny_data: Path) -> None:
    a = train(cfg("epochs=1", "max_steps=2"), tiny_data, tmp_path / "a", progress=False)
    b = train(cfg("epochs=1", "max_steps=2"), tiny_data, tmp_path / "b", progress=False)
    wa, wb = torch.load(a, weights_only=True)["model"], torch.load(b, weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_continues_an_interrupted_run(tmp_path: Path, tiny_data: Path, monkeypatch) -> None:
    full = train(cfg("epochs=2"), tiny_data, tmp_path / "full", progress=False)
    out = tmp_path / "resumed"
    original = DetectionDataset.set_epoch

    def interrupt_at_epoch_2(self, epoch: int) -> None:
        if epoch == 1:
            raise KeyboardInterrupt
        original(self, epoch)

    monkeypatch.setattr(DetectionDataset, "set_epoch", interrupt_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg("epochs=2"), tiny_data, out, progress=False)
    assert (out / "last.pt").is_file() and not (out / "model.pt").exists()
    monkeypatch.setattr(DetectionDataset, "set_epoch", original)
    resumed = train(cfg("epochs=2"), tiny_data, out, resume=True, progress=False)
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    wf = torch.load(full, weights_only=True)["model"]
    wr = torch.load(resumed, weights_only=True)["model"]
    assert all(torch.equal(wf[k], wr[k]) for k in wf), (
        "resumed run must equal the uninterrupted one"
    )


@pytest.mark.timeout(300)
def test_ddp_two_cpu_processes(tmp_path: Path, tiny_data: Path) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # gloo
    r = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "runtime.cli",
            "train",
            "--model",
            "nano",
            "--data",
            str(tiny_data),
            "--out",
            str(out),
            "--img-size",
            "64",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--set",
            "max_steps=2",
            "--set",
            "bf16=off",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "model.pt").is_file()
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 2 and record["images_per_s"] > 0


def test_bad_checkpoints_give_one_line_errors(
    tmp_path: Path, tiny_checkpoint: Path, capsys
) -> None:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:1000])
    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": {}}, wrong)
    for path in (truncated, wrong, tmp_path / "missing.pt"):
        with pytest.raises(ModelFileError, match=path.name):
            read_checkpoint(path)
    code = main(["eval", "--model", str(wrong), "--data", str(tiny_checkpoint.parent)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1


def test_width_and_depth_override_the_preset(tmp_path: Path, tiny_data: Path) -> None:
    from distill.models.presets import PRESETS, Scale
    from runtime.errors import ConfigError

    assert load(TrainConfig, None, ["model=small"]).arch_name == "small"
    cfg = load(
        TrainConfig,
        None,
        ["model=nano", "width=0.125", "depth=0.67", "img_size=64", "epochs=1", "batch_size=4",
         "max_steps=1", "bf16=off"],
    )  # fmt: skip
    assert cfg.scale() == Scale(0.125, 0.67, PRESETS["nano"].max_channels)
    assert cfg.arch_name == "w0.125-d0.67"
    out = train(cfg, tiny_data, tmp_path, progress=False)
    _, info = load_detector(out)
    assert info["preset"] == "w0.125-d0.67" and info["scale"]["width"] == 0.125
    with pytest.raises(ConfigError, match="width, depth and max_channels"):
        load(TrainConfig, None, ["width=-1"])


def test_skip_bad_train_and_eval_leave_out_damage_and_list_it(
    tmp_path: Path, damaged_data: Path, tiny_checkpoint: Path, capsys
) -> None:
    out = tmp_path / "run"
    tiny = "--model nano --img-size 64 --batch-size 4 --epochs 1 --no-progress "
    tiny += "--set max_steps=1 --set bf16=off"
    args = ["train", "--data", str(damaged_data), "--out", str(out), *tiny.split()]
    assert main(args) == 2  # without --skip-bad the first problem stops the run, in one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "000001.jpg: truncated or corrupt JPEG" in err[0]
    assert main([*args, "--skip-bad"]) == 0
    report = out / "skipped.json"
    assert f"4 damaged input(s) skipped (4 image(s) left out); listed in {report}" in (
        capsys.readouterr().out
    )
    items = json.loads(report.read_text())["items"]
    assert [(i["split"], Path(i["file"]).name, i["line"]) for i in items] == [
        ("train", "000001.jpg", None),
        ("train", "000002.txt", 1),
        ("val", "000000.jpg", None),
        ("val", "000001.txt", 1),
    ]
    assert read_checkpoint(out / "model.pt")["config"]["skip_bad"] is True

    args = ["eval", "--model", str(tiny_checkpoint), "--data", str(damaged_data)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "000000.jpg: not a readable image" in err[0]
    assert main([*args, "--skip-bad"]) == 0
    report = damaged_data / "data.skipped.json"
    captured = capsys.readouterr()
    assert f"2 damaged input(s) skipped (2 image(s) left out); listed in {report}" in captured.out
    assert "mAP" in captured.out
    items = json.loads(report.read_text())["items"]
    assert [(i["split"], Path(i["image"]).name, i["line"]) for i in items] == [
        ("val", "000000.jpg", None),
        ("val", "000001.jpg", 1),
    ]


def test_measure_steps_times_the_loops_own_steps_after_a_warmup(
    tmp_path: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distill.train as loop
    from distill.trainee import Trainee

    clock = [100.0]
    real_step = Trainee.step

    def step(self, *args, **kwargs) -> None:  # "takes" 5 s the first time, then 2 s
        clock[0] += 5.0 if clock[0] == 100.0 else 2.0
        real_step(self, *args, **kwargs)

    fake_time = type("FakeTime", (), {"perf_counter": staticmethod(lambda: clock[0])})
    monkeypatch.setattr(Trainee, "step", step)
    monkeypatch.setattr(loop, "time", fake_time)
    monkeypatch.chdir(tmp_path)
    timing = loop.measure_steps(cfg("epochs=3"), tiny_data, steps=3, warmup=1)
    assert timing.seconds_per_step == 2.0 and timing.warmup_seconds == 5.0
    assert timing.steps_per_epoch == 2  # 8 images, batches of 4: what train() would run
    assert clock[0] == 100.0 + 5.0 + 2.0 * 2  # an epoch has 2 steps: the timed pass stops there
    assert list(tmp_path.iterdir()) == []  # nothing written
