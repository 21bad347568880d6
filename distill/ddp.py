"""Multi-process training through ``torchrun`` (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler


def setup() -> tuple[int, int, torch.device]:
    """(rank, world size, device). Initializes the process group when run by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
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


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def loader(
    dataset: Dataset, batch: int, collate, workers: int, seed: int, rank: int, world: int
) -> DataLoader:
    """A shuffled loader whose order depends only on (seed, epoch): identical on resume."""
    if world > 1:
        sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=seed, drop_last=True)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        drop_last=True,
        persistent_workers=False,
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
