"""Process-group set-up (torchrun, SLURM or a single process) and small communication helpers.

Every helper also works without torch.distributed (world size 1), so library code calls them
unconditionally.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist

from pretrain.utils.errors import ConfigError

DEFAULT_MASTER_PORT = "29500"


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average a tensor over processes (returns it unchanged for one process)."""
    if get_world_size() == 1:
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor)
    return tensor / get_world_size()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes (returns it unchanged for one process)."""
    if get_world_size() == 1:
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor)
    return tensor


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate tensors from all processes along dim 0, in rank order; sizes along dim 0 may differ."""
    if get_world_size() == 1:
        return tensor
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(get_world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[: int(s.item())] for part, s in zip(parts, sizes)])


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list such as 'gpu[03-05,7],cpu1' (-> 'gpu03')."""
    match = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise ValueError(
            f"Cannot read a host name from SLURM node list {nodelist!r}; set MASTER_ADDR yourself."
        )
    prefix, ranges = match.group(1), match.group(3)
    return prefix + ranges.split(",")[0].split("-")[0] if ranges else prefix


def environment_info(env=None) -> DistInfo:
    """Rank, world size and local rank from torchrun's variables, else from SLURM's (srun), else one process.

    For SLURM, MASTER_ADDR (first node of the job) and MASTER_PORT are filled in when missing, so
    ``init_process_group("env://")`` works under plain ``srun``.
    """
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        info = DistInfo(
            int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
        )
        env.setdefault(
            "MASTER_ADDR",
            first_slurm_host(env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", ""))),
        )
        env.setdefault("MASTER_PORT", DEFAULT_MASTER_PORT)
        env.update(
            RANK=str(info.rank), WORLD_SIZE=str(info.world_size), LOCAL_RANK=str(info.local_rank)
        )
        return info
    return DistInfo()


def init_distributed(backend: str = "", timeout_minutes: int = 30) -> DistInfo:
    """Join the process group described by the environment (nothing to do for a single process).

    NCCL when CUDA is available, else gloo (CPU); each process uses the GPU of its local rank.
    """
    info = environment_info()
    if info.world_size == 1 or is_initialized():
        return info
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(
        backend or ("nccl" if use_cuda else "gloo"),
        init_method="env://",
        rank=info.rank,
        world_size=info.world_size,
        timeout=timedelta(minutes=timeout_minutes),
    )
    return info


def resolve_device(name: str) -> torch.device:
    """The training device; with CUDA, the GPU of this process's local rank."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "DEVICE is 'cuda' but no CUDA device is visible. Use DEVICE cpu (or auto)."
        )
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return (
        torch.device("cuda", torch.cuda.current_device()) if name == "cuda" else torch.device(name)
    )


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group() -> Iterator[DistInfo]:
    """Join the environment's process group (torchrun / SLURM) for the ``with`` block, then leave it.

    A single process joins nothing; the DistInfo says which process this is.
    """
    info = init_distributed()
    try:
        yield info
    finally:
        cleanup()
