"""Multi-process training through ``torchrun`` (gloo on CPU, nccl on GPU).

What N processes of ``batch_size`` images each compute is one step on a *global batch*
of N x ``batch_size`` images, the same step one process would take on all of them:

- each process loads its own share of every epoch (a :class:`DistributedSampler`, a new
  order each epoch through ``set_epoch``), and of the unlabelled frames
  (:class:`distill.distillation.FrameStream`);
- BatchNorm statistics are those of the global batch (:func:`wrap`: torch's SyncBatchNorm
  on CUDA, :class:`_GlobalBatchNorm2d` on the CPU, where torch's refuses to run);
- losses that divide a sum over the batch by another sum (the detection loss by the
  assigned scores, weighted KD terms by their weights) divide by the global sum
  (:func:`denominator` inside :func:`global_step`) and count the global batch, so that
  the mean of the processes' gradients, which DDP applies, is the global batch's gradient;
- logged losses and speeds are reduced over the processes (:func:`mean_over_ranks`).

Process 0 alone evaluates and writes files; the others wait at a :func:`barrier`. A
process that dies or stops answering ends the others with :class:`PeerLost` within the
process group's timeout (``UNDERSTUDY_DDP_TIMEOUT`` seconds, default 1800: it must exceed
an evaluation on process 0). Under ``torchrun --max-restarts N`` a restarted job resumes
from ``last.pt`` on its own (:func:`restarted`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from runtime.errors import UnderstudyError

TIMEOUT_ENV = "UNDERSTUDY_DDP_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0


class PeerLost(UnderstudyError):
    """Another process of a multi-process job died or stopped answering."""


def setup() -> tuple[int, int, torch.device]:
    """(rank, world size, device). Initializes the process group when run by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
        store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
        # a key space of its own per torchrun attempt: after a restart, a process that
        # gets here first must not read the dead attempt's addresses (it would fail to
        # connect and end the restarted job)
        store = dist.PrefixStore(f"understudy/attempt{restarted()}", store)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
        if world > 1:  # share the cores between processes instead of oversubscribing
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return rank, world, device


def restarted() -> int:
    """How many times torchrun restarted this job (``--max-restarts``); 0 otherwise."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


class _SumOverRanks(torch.autograd.Function):
    """Σ over the processes of a tensor, inside autograd: the gradient of each process's
    input is the sum of the processes' output gradients (the loss being their sum)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


class _GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of all processes' images together
    (torch's SyncBatchNorm, for the CPU and gloo). Mean and variance are computed in two
    passes like ``F.batch_norm``; the all-reduces take part in autograd, so gradients flow
    through the global statistics as they would in one process."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and _world() > 1):
            return super().forward(x)
        c = x.shape[1]
        dims = (0, 2, 3)
        n_local = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
        total = _SumOverRanks.apply(torch.cat([x.sum(dims), n_local]))
        n = total[c].detach()
        mean = total[:c] / n
        centred = x - mean[None, :, None, None]
        var = _SumOverRanks.apply(centred.pow(2).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None:
            self._track(mean.detach(), var.detach(), float(n))
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        self.num_batches_tracked += 1
        m = self.momentum
        if m is None:  # cumulative average, as nn.BatchNorm2d
            m = 1.0 / float(self.num_batches_tracked)
        unbiased = var * (n / max(n - 1.0, 1.0))
        self.running_mean.mul_(1 - m).add_(mean, alpha=m)
        self.running_var.mul_(1 - m).add_(unbiased, alpha=m)


def _global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d of ``module`` by a :class:`_GlobalBatchNorm2d` sharing
    its parameters and buffers (state_dict keys unchanged)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            bn = _GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine).to(
                child.weight.device if child.affine else "cpu"
            )
            if child.affine:
                bn.weight, bn.bias = child.weight, child.bias
            bn.running_mean, bn.running_var = child.running_mean, child.running_var
            bn.num_batches_tracked = child.num_batches_tracked
            bn.train(child.training)
            setattr(module, name, bn)
        else:
            _global_batchnorm(child)
    return module


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with global-batch BatchNorm, in DistributedDataParallel. The BatchNorm
    layers are replaced inside ``model`` itself (same parameters, same state_dict)."""
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return nn.parallel.DistributedDataParallel(_global_batchnorm(model))


class _SkipSampler(Sampler):
    """The indices of ``sampler`` after its first ``skip`` (a resumed epoch)."""

    def __init__(self, sampler: Sampler, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def epoch_sampler(dataset: Dataset, seed: int, epoch: int, rank: int, world: int) -> Sampler:
    """This process's shuffled indices of ``dataset`` in ``epoch``: the order depends only
    on (seed, epoch); with ``world`` > 1 a :class:`DistributedSampler` (``set_epoch``)
    gives process ``rank`` every ``world``-th index, disjoint from the others' (the tail
    that does not divide evenly is left out)."""
    if world > 1:
        sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
        return sampler
    return RandomSampler(dataset, generator=torch.Generator().manual_seed(seed + epoch))


def loader(
    dataset: Dataset,
    batch: int,
    collate,
    workers: int,
    seed: int,
    rank: int,
    world: int,
    epoch: int = 0,
    start_batch: int = 0,
) -> DataLoader:
    """A shuffled loader of ``epoch`` (see :func:`epoch_sampler`) starting at its batch
    ``start_batch``: identical on resume."""
    sampler = epoch_sampler(dataset, seed, epoch, rank, world)
    if start_batch:
        sampler = _SkipSampler(sampler, start_batch * batch)
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        drop_last=True,
        persistent_workers=False,
        # workers' seeds from here, not from the global RNG (whose state last.pt restores)
        generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch * 1009 + rank),
    )


_step_world = 1  # > 1 inside global_step(): loss denominators are global


@contextmanager
def global_step(world: int) -> Iterator[None]:
    """Within: one DDP training step of ``world`` processes (see :func:`denominator`)."""
    global _step_world
    _step_world = world if world > 1 and dist.is_initialized() else 1
    try:
        yield
    finally:
        _step_world = 1


def denominator(x: torch.Tensor, floor: float) -> torch.Tensor:
    """The denominator of a loss that divides a sum over the batch's images by ``x``,
    another such sum (which carries no gradient): ``max(x, floor)`` in one process. In a
    :func:`global_step` of N processes: ``max(Σ_processes x, floor) / N``, so that each
    process's loss is N times its share of the global batch's loss and the mean of the
    processes' gradients is the global batch's gradient. Every process must call it at
    the same points (it is a collective)."""
    if _step_world == 1:
        return x.clamp(min=floor)
    total = x.detach().clone()
    dist.all_reduce(total)
    return total.clamp(min=floor) / _step_world


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """The mean over the processes of each value (same keys in every process); one
    process: unchanged."""
    if _world() == 1 or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: v / _world() for k, v in zip(keys, t.tolist())}


def sum_and_max(total: float, longest: float) -> tuple[float, float]:
    """(Σ_processes ``total``, max_processes ``longest``), e.g. images and seconds."""
    if _world() == 1:
        return total, longest
    s = torch.tensor([total], dtype=torch.float64)
    m = torch.tensor([longest], dtype=torch.float64)
    dist.all_reduce(s)
    dist.all_reduce(m, op=dist.ReduceOp.MAX)
    return float(s), float(m)


def gather(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (a list of one in one process)."""
    if _world() == 1:
        return [obj]
    out: list[Any] = [None] * _world()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait until every process gets here (e.g. while process 0 writes a checkpoint)."""
    if _world() > 1:
        dist.barrier()


def is_peer_failure(error: BaseException) -> bool:
    """Whether ``error`` came from a collective whose other side died or timed out."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    signs = ("gloo", "NCCL", "Connection closed", "Connection reset", "Timed out", "timed out")
    return isinstance(error, RuntimeError) and any(s in text for s in signs)


def peer_lost(error: BaseException, rank: int, world: int, where: str, out: str) -> PeerLost:
    """The one-line error for a dead or silent peer (see :func:`is_peer_failure`)."""
    first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error)
    return PeerLost(
        f"process {rank} of {world}: another process died or stopped answering at {where} "
        f"({first}); the job stops. Resume with --resume from {out}/last.pt "
        "(torchrun --max-restarts N does it on its own)"
    )


def average_gradients(modules: list[nn.Module]) -> None:
    """All-reduce (mean) the gradients of modules that are not wrapped in DDP."""
    world = dist.get_world_size()
    for m in modules:
        for p in m.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= world


def cleanup() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
