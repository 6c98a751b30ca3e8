"""DistributedDataParallel helpers. Single-process runs see world size 1 and plain modules.

Launched by ``torchrun``, the process group is initialised from the environment (gloo on CPU,
nccl on CUDA); every rank trains on its shard (DistributedSampler), rank 0 alone writes files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as td
import torch.nn as nn
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler


def launched() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init(device: torch.device) -> None:
    if launched() and not td.is_initialized():
        td.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def world_size() -> int:
    return td.get_world_size() if td.is_initialized() else 1


def rank() -> int:
    return td.get_rank() if td.is_initialized() else 0


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if td.is_initialized():
        td.barrier()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    if not td.is_initialized():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def sampler(ds: Dataset, seed: int) -> DistributedSampler:
    return DistributedSampler(ds, num_replicas=world_size(), rank=rank(), shuffle=True, seed=seed, drop_last=True)


def local_device(device: torch.device) -> torch.device:
    """Each rank on its own GPU (LOCAL_RANK); CPU ranks share the CPU."""
    if device.type == "cuda" and launched():
        idx = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(idx)
        return torch.device("cuda", idx)
    return device


def shutdown() -> None:
    """Leave the process group at the end of a torchrun process (torch warns, and may hang, otherwise)."""
    if td.is_initialized():
        td.destroy_process_group()
