"""Training and distillation across processes (torchrun, gloo, 2 CPU processes), and
exact resume after a SIGKILL, alone and under DDP.

The processes run ``tests/distill/ddp_driver.py``, which records what each one loaded,
logged and wrote. BatchNorm under DDP uses the statistics of the global batch (the
project's setting: SyncBatchNorm semantics; see ``distill/ddp.py``), so one DDP step
equals one process's step on the concatenated batch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from distill import ddp
from distill.config import load
from distill.data.torch_dataset import collate, collate_frames
from distill.distillation import DistillConfig, FrameStream, _distillers
from distill.train import load_data, train, training_dataset
from distill.train_config import TrainConfig
from distill.trainee import Trainee

DRIVER = Path(__file__).with_name("ddp_driver.py")
ROOT = Path(__file__).parents[2]
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
MODES = ("plain", "distill", "unlabelled")
# one SGD step big enough to compare updates: lr from the first step, no warm-up
ONE_STEP = ["epochs=1", "max_steps=1", "optimizer=sgd", "lr=0.05", "warmup_epochs=0"]
# resume runs: 2 epochs, last.pt every 3 steps, also mid-epoch
RESUME = ["epochs=2", "save_every=3"]


def base(batch: int) -> list[str]:
    return ["model=nano", "img_size=64", f"batch_size={batch}", "bf16=off", "kd.teacher_bf16=off"]


def settings(mode: str, extra: list[str], batch: int) -> list[str]:
    keys = base(batch) + extra
    return [k for k in keys if not k.startswith("kd.")] if mode == "plain" else keys


def job(mode: str, data: Path, teacher: Path, out: Path, extra: list[str], batch: int, **kw):
    return {
        "mode": mode,
        "data": str(data),
        "teacher": str(teacher),
        "out": str(out),
        "set": settings(mode, extra, batch),
        **kw,
    }


def launch(
    jobs: list[dict],
    processes: int,
    restarts: int = 0,
    timeout: int = 400,
    gpus: bool = False,
    timeout_s: int = 120,
):
    """Run the driver on ``jobs``: alone, or under torchrun with ``processes``; on the CPU
    (gloo) unless ``gpus`` (then one GPU per process, nccl, fp32 without TF32).
    ``timeout_s``: the process group's timeout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "UNDERSTUDY_DDP_TIMEOUT": str(timeout_s)}
    if gpus:
        env["NVIDIA_TF32_OVERRIDE"] = "0"
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"
    if processes == 1:
        cmd = [sys.executable, str(DRIVER), json.dumps(jobs)]
    else:
        cmd = [
            TORCHRUN,
            "--standalone",
            f"--nproc-per-node={processes}",
            f"--max-restarts={restarts}",
            "--monitor-interval=1",  # the survivor has time to say why it stops
            str(DRIVER),
            json.dumps(jobs),
        ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def weights(path: Path, key: str = "model_raw") -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt["train_state"][key] if key != "model" else ckpt["model"]


@pytest.fixture
def on_cpu(monkeypatch) -> None:
    """Runs in this process train on the CPU, as the launched ones (even beside a GPU)."""
    monkeypatch.setattr(ddp, "setup", lambda: (0, 1, torch.device("cpu")))


def records(folder: Path) -> list[dict]:
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in (0, 1)]


# --- one step on 2 processes == one step of one process on both batches -----------------


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, tiny_data: Path, tiny_checkpoint: Path) -> Path:
    """One torchrun launch of 2 processes running, one after the other:

    - ``one_step/{plain,unlabelled}``: one SGD step each, plain training (2 images per
      process) and distillation with unlabelled frames (2 labelled + 2 unlabelled per
      process; hybrid: logit KD, LD, feature KD through adapters), recorded;
    - ``full/<mode>``: each mode of the resume tests, uninterrupted.
    """
    root = tmp_path_factory.mktemp("ddp")
    one = root / "one_step"
    jobs = [
        job(
            "plain",
            tiny_data,
            tiny_checkpoint,
            one / "plain",
            ONE_STEP,
            2,
            record=str(one / "rec_plain"),
        ),
        job(
            "unlabelled",
            tiny_data,
            tiny_checkpoint,
            one / "unlabelled",
            ONE_STEP,
            4,
            record=str(one / "rec_unlabelled"),
        ),
    ]
    jobs += [_resume_job(m, tiny_data, tiny_checkpoint, root / "full" / m) for m in MODES]
    r = launch(jobs, 2)
    assert r.returncode == 0, r.stderr[-4000:]
    return root


@pytest.fixture(scope="module")
def one_step(two_processes: Path) -> Path:
    return two_processes / "one_step"


def test_each_process_trains_on_its_own_half_of_the_images_and_frames(one_step: Path) -> None:
    for mode in ("plain", "unlabelled"):
        r0, r1 = records(one_step / f"rec_{mode}")
        assert r0["images"] and r1["images"], "both processes load a batch"
        assert not set(r0["images"]) & set(r1["images"]), f"{mode}: shared training images"
        assert len(r0["images"]) == len(r1["images"])
    r0, r1 = records(one_step / "rec_unlabelled")
    assert r0["frames"] and r1["frames"]
    assert not set(r0["frames"]) & set(r1["frames"]), "unlabelled frames shared by processes"


def _reference_step(mode: str, data: Path, teacher: Path, recs: list[dict], out: Path) -> Trainee:
    """One process's step on the concatenated batch of both processes' records."""
    per_rank = 2 if mode == "plain" else 4
    if mode == "plain":
        cfg = load(TrainConfig, None, settings(mode, ONE_STEP, 2 * per_rank))
    else:
        cfg = load(DistillConfig, None, settings(mode, ONE_STEP, 2 * per_rank))
    split, _ = load_data(data, cfg, [], 0, False)
    dataset = training_dataset(split, cfg)
    dataset.set_epoch(0)
    dataset.aug = replace(cfg.aug, mosaic=0.0)  # epochs=1 <= close_mosaic
    batch = collate([dataset[i] for r in recs for i in r["images"]])
    distiller, ctx = None, None
    images, targets = batch[0], batch[1]
    if mode != "plain":
        (distiller,), frames = _distillers([cfg], str(teacher), str(data), str(data / "unlabelled"))
        distiller._frames = iter([collate_frames([frames[i] for r in recs for i in r["frames"]])])
        images, targets, ctx = distiller.prepare(batch)
    t = Trainee(cfg, out, distiller, split.class_names, torch.device("cpu"), 0, 1)
    initial = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.step(images, targets, ctx, recs[0]["lr"][0], False, 1, "reference")
    t.initial = initial
    return t


@pytest.mark.parametrize("mode", ["plain", "unlabelled"])
def test_one_ddp_step_equals_one_process_on_the_concatenated_batch(
    mode: str, one_step: Path, tiny_data: Path, tiny_checkpoint: Path, tmp_path: Path, on_cpu
) -> None:
    assert_one_step_matches(mode, one_step, tiny_data, tiny_checkpoint, tmp_path, 2e-3)


def assert_one_step_matches(
    mode: str, one_step: Path, data: Path, teacher: Path, tmp_path: Path, tol: float
) -> None:
    """The DDP run's weights, adapters and logged losses after its step in ``one_step``
    equal those of one process's step on the concatenated batch (the update to within
    ``tol`` of its size)."""
    recs = records(one_step / f"rec_{mode}")
    ref = _reference_step(mode, data, teacher, recs, tmp_path)
    got = weights(one_step / mode / "last.pt")
    want = ref.model.state_dict()
    assert set(got) == set(want)
    for k, w in want.items():
        if not w.dtype.is_floating_point:
            assert torch.equal(got[k], w), k
            continue
        moved = (w - ref.initial[k]).norm()
        if moved > 1e-6:  # the update itself matches, not just the weights
            err = (got[k] - w).norm() / moved
            assert err < tol, f"{k}: DDP update differs from the global batch's by {err:.2e}"
        assert torch.allclose(got[k], w, rtol=1e-4, atol=1e-6), k
    if mode != "plain":  # the adapters, averaged outside DDP
        ckpt = torch.load(one_step / mode / "last.pt", map_location="cpu", weights_only=True)
        for k, w in ref.extra[0].state_dict().items():
            assert torch.allclose(ckpt["train_state"]["extra_modules"][0][k], w, atol=1e-6), k
    record = json.loads((one_step / mode / "metrics.jsonl").read_text().splitlines()[-1])
    for k, v in ref.logs.items():
        assert record[f"loss_{k}"] == pytest.approx(v, rel=1e-3, abs=2e-5), k


def test_logged_losses_are_the_mean_over_processes(one_step: Path) -> None:
    for mode in ("plain", "unlabelled"):
        r0, r1 = records(one_step / f"rec_{mode}")
        record = json.loads((one_step / mode / "metrics.jsonl").read_text().splitlines()[-1])
        (l0,), (l1,) = r0["logs"], r1["logs"]
        assert l0 != l1, "the processes' own losses differ"
        for k in l0:
            assert record[f"loss_{k}"] == pytest.approx((l0[k] + l1[k]) / 2, abs=1e-5), k
        assert record["processes"] == 2 and record["images_per_s"] > 0


def test_only_process_0_writes_files(one_step: Path) -> None:
    for mode in ("plain", "unlabelled"):
        r0, r1 = records(one_step / f"rec_{mode}")
        assert r1["writes"] == [], f"process 1 wrote {r1['writes']}"
        written = {Path(p).name for p in r0["writes"]}
        assert {"last.pt", "model.pt", "metrics.jsonl"} <= written


# --- SIGKILL mid-epoch, resume: the same weights as an uninterrupted run ------------------


def _resume_job(mode: str, data: Path, teacher: Path, out: Path, **kw) -> dict:
    """2 epochs, 2 images per process (distillation with frames: 1 + 1)."""
    return job(mode, data, teacher, out, RESUME, 2, **kw)


def _steps(mode: str, processes: int) -> int:
    """Optimizer steps of a resume job: 8 training images, 2 epochs."""
    labelled = 1 if mode == "unlabelled" else 2
    return 2 * 8 // (labelled * processes)


@pytest.fixture(scope="module")
def one_process_runs(tmp_path_factory, tiny_data: Path, tiny_checkpoint: Path) -> Path:
    """Each mode in one process: ``killed/<mode>`` SIGKILLed at its last step (one launch
    each; last.pt is then 1 or 2 steps back, mid-epoch), then one launch that resumes
    them and runs ``full/<mode>`` uninterrupted."""
    root = tmp_path_factory.mktemp("alone")
    for m in MODES:
        killed = _resume_job(
            m, tiny_data, tiny_checkpoint, root / "killed" / m, kill_at=_steps(m, 1) - 1
        )
        r = launch([killed], 1)
        assert r.returncode == -9, r.stderr[-3000:]
        state = torch.load(root / "killed" / m / "last.pt", weights_only=True)["train_state"]
        assert state["batch"] > 0, "the last checkpoint was written mid-epoch"
        assert not (root / "killed" / m / "model.pt").exists()
    jobs = [
        _resume_job(m, tiny_data, tiny_checkpoint, root / "killed" / m, resume=True) for m in MODES
    ]
    jobs += [_resume_job(m, tiny_data, tiny_checkpoint, root / "full" / m) for m in MODES]
    r = launch(jobs, 1)
    assert r.returncode == 0, r.stderr[-4000:]
    return root


@pytest.mark.parametrize("mode", MODES)
def test_single_process_run_killed_mid_epoch_resumes_to_the_same_weights(
    mode: str, one_process_runs: Path
) -> None:
    full, killed = one_process_runs / "full" / mode, one_process_runs / "killed" / mode
    a, b = weights(full / "model.pt", "model"), weights(killed / "model.pt", "model")
    assert all(torch.equal(a[k], b[k]) for k in a), f"{mode}: resumed != uninterrupted"
    a, b = weights(full / "last.pt"), weights(killed / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    logged = [(f / "metrics.jsonl").read_text().splitlines() for f in (full, killed)]
    losses = [
        [{k: v for k, v in json.loads(x).items() if k.startswith("loss_")} for x in lines]
        for lines in logged
    ]
    assert losses[0] == losses[1], "the resumed run logs the same losses"


@pytest.fixture(scope="module")
def two_process_runs(two_processes: Path, tiny_data: Path, tiny_checkpoint: Path) -> Path:
    """Each mode on 2 processes, killed: in torchrun's attempt i, process 1 is SIGKILLed
    at the last step of the i-th mode, and ``--max-restarts 3`` restarts the job, which
    resumes from last.pt on its own. (The uninterrupted runs: ``full/<mode>``.)"""
    root = two_processes
    killed = [
        _resume_job(
            m,
            tiny_data,
            tiny_checkpoint,
            root / "killed" / m,
            kill_at=_steps(m, 2) - 1,
            kill_attempt=i,
        )
        for i, m in enumerate(MODES)
    ]
    r = launch(killed, 2, restarts=3)
    (root / "killed.log").write_text(r.stdout + r.stderr)
    assert r.returncode == 0, r.stderr[-4000:]
    return root


@pytest.mark.parametrize("mode", MODES)
def test_two_process_run_killed_mid_epoch_is_resumed_by_torchrun_to_the_same_weights(
    mode: str, two_process_runs: Path
) -> None:
    full = weights(two_process_runs / "full" / mode / "model.pt", "model")
    resumed = weights(two_process_runs / "killed" / mode / "model.pt", "model")
    assert all(torch.equal(full[k], resumed[k]) for k in full), f"{mode}: resumed != uninterrupted"
    lines = (two_process_runs / "killed" / mode / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


def test_a_dead_process_ends_its_peers_with_a_clear_message(two_process_runs: Path) -> None:
    log = (two_process_runs / "killed.log").read_text()
    assert "another process died or stopped answering" in log
    assert "resuming from last.pt" in log  # torchrun's restart resumed on its own


class _Numbers:
    """A stand-in for UnlabelledFrames: frame i is the tensor [i]."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.tensor([float(i)]), i


def _draw(stream: FrameStream, k: int) -> list[int]:
    return [i for _ in range(k) for i in next(stream)[1]]


def test_frame_stream_shares_are_disjoint_and_resume_where_they_stopped() -> None:
    frames = _Numbers(10)
    a, b = FrameStream(frames, 2, 7, 0, 2), FrameStream(frames, 2, 7, 1, 2)
    for _ in range(3):  # passes: each share is 4 of the 10 frames (2 sit a pass out)
        da, db = _draw(a, 2), _draw(b, 2)
        assert not set(da) & set(db) and len(set(da) | set(db)) == 8
    alone = FrameStream(frames, 3, 7)
    _draw(alone, 4)  # into the second pass
    state = alone.state_dict()
    expected = _draw(alone, 5)
    resumed = FrameStream(frames, 3, 7)
    resumed.load_state_dict(state)
    assert _draw(resumed, 5) == expected
    other = FrameStream(frames, 3, 7, 0, 2)
    other.load_state_dict(state)  # written by 1 process, read by 2: the pass starts again
    assert other.state_dict() == {"pass": state["pass"], "batch": 0, "world": 2}


def test_a_silent_process_ends_the_job_within_the_timeout(
    tmp_path: Path, tiny_data: Path, tiny_checkpoint: Path
) -> None:
    hangs = job("plain", tiny_data, tiny_checkpoint, tmp_path / "run", RESUME, 2, hang_at=1)
    t0 = time.monotonic()
    r = launch([hangs], 2, timeout_s=15)
    assert r.returncode != 0
    assert "another process died or stopped answering at epoch 1 step 1" in r.stderr
    assert time.monotonic() - t0 < 200  # ended by the 15 s timeout, not the hour's sleep


def test_resuming_with_another_number_of_processes_restarts_the_epoch_and_says_so(
    tmp_path: Path, tiny_data: Path, caplog, on_cpu
) -> None:
    cfg = load(TrainConfig, None, settings("plain", RESUME, 2))
    out = tmp_path / "run"
    train(cfg, tiny_data, out, progress=False)
    last = out / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["train_state"].update(epoch=1, batch=2, step=6, world=2)  # as if 2 processes stopped
    torch.save(ckpt, last)
    (out / "model.pt").unlink()
    with caplog.at_level("WARNING", logger="distill.train"):
        train(cfg, tiny_data, out, resume=True, progress=False)
    assert "written by 2 process(es) and this run has 1" in caplog.text
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 2 and record["step"] == 8  # epoch 2 again, all 4 of its steps


@pytest.mark.gpu
@pytest.mark.skipif(
    torch.cuda.device_count() < 2,
    reason=f"needs 2 CUDA devices (nccl); this machine has {torch.cuda.device_count()}",
)
def test_the_same_on_two_gpus(
    tmp_path: Path, tiny_data: Path, tiny_checkpoint: Path, on_cpu
) -> None:
    """On 2 CUDA devices (nccl, torch's SyncBatchNorm): one step of plain training and of
    distillation with frames equals one (CPU) process's step on the concatenated batch,
    and a run killed mid-epoch and resumed by torchrun's restart ends where the
    uninterrupted one does (to within fp32 noise: CUDA kernels are not bitwise
    reproducible across runs)."""
    one = tmp_path / "one_step"
    jobs = [
        job(
            m,
            tiny_data,
            tiny_checkpoint,
            one / m,
            [*ONE_STEP, "workers=0"],
            b,
            record=str(one / f"rec_{m}"),
        )
        for m, b in (("plain", 2), ("unlabelled", 4))
    ]
    jobs.append(_resume_job("unlabelled", tiny_data, tiny_checkpoint, tmp_path / "full"))
    r = launch(jobs, 2, gpus=True)
    assert r.returncode == 0, r.stderr[-4000:]
    for mode in ("plain", "unlabelled"):
        r0, r1 = records(one / f"rec_{mode}")
        assert not set(r0["images"]) & set(r1["images"]) and r1["writes"] == []
        assert_one_step_matches(mode, one, tiny_data, tiny_checkpoint, tmp_path / mode, 1e-2)
    killed = _resume_job(
        "unlabelled",
        tiny_data,
        tiny_checkpoint,
        tmp_path / "killed",
        kill_at=_steps("unlabelled", 2) - 1,
    )
    r = launch([killed], 2, restarts=1, gpus=True)
    assert r.returncode == 0, r.stderr[-4000:]
    a = weights(tmp_path / "full" / "model.pt", "model")
    b = weights(tmp_path / "killed" / "model.pt", "model")
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-5) for k in a)
