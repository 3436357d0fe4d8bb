"""Several processes on one run: torchrun's environment, the process group, and which shards each rank explains.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``); a run started by
it joins a process group (``nccl`` on GPUs, ``gloo`` on CPU; an existing group is reused), puts rank ``r`` on
``cuda:LOCAL_RANK``, and explains the shards ``k`` with ``k % WORLD_SIZE == r``: disjoint, every shard once, the
uneven tail handled by some ranks getting one shard fewer (no padding, no duplicate samples).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistContext", "env_ranks", "rank_shards", "setup"]


def env_ranks() -> tuple[int, int, int]:
    """``(RANK, WORLD_SIZE, LOCAL_RANK)`` from the environment (``(0, 1, 0)`` when torchrun did not start us).

    Raises:
        ValueError: inconsistent values.

    """
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    return rank, world, local


def rank_shards(num_shards: int, rank: int, world_size: int) -> list[int]:
    """The shards rank ``rank`` explains: ``k % world_size == rank`` (round robin, no padding)."""
    return list(range(rank, num_shards, world_size))


@dataclass
class DistContext:
    """Where this process stands in the run.

    Attributes:
        rank: global rank.
        world_size: number of processes.
        local_rank: rank on this node (picks the GPU).
        backend: the process group's backend, ``None`` for a single process.
        owns_group: this run created the process group (and destroys it in :meth:`close`).

    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: prints progress, merges the index and writes the manifest."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op for one process)."""
        if self.backend is None:
            return
        if self.backend == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order."""
        if self.backend is None:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Destroy the process group if this run created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self.owns_group = False


def setup(device: str | torch.device | None = "auto", timeout_s: float = 1800.0) -> tuple[DistContext, torch.device]:
    """Join the run's process group (when started by torchrun) and pick this rank's device.

    Args:
        device: ``"auto"``/``None`` (``cuda:LOCAL_RANK`` when CUDA is available, else CPU) or an explicit device
            (``"cuda"`` means ``cuda:LOCAL_RANK``).
        timeout_s: the process group's timeout.

    Returns:
        the context and the device.

    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        ctx = DistContext(rank, world, local, dist.get_backend() if world > 1 else None)
    else:
        rank, world, local = env_ranks()
        ctx = DistContext(rank, world, local)
    dev = _device(device, ctx.local_rank)
    if ctx.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        ctx.backend, ctx.owns_group = backend, True
    return ctx, dev


def _device(device: str | torch.device | None, local_rank: int) -> torch.device:
    if device is None or device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def shard_ranges(num_samples: int, shard_size: int) -> Sequence[range]:
    """The sample ranges of the shards: ``[k * shard_size, min((k + 1) * shard_size, num_samples))``."""
    return [range(s, min(s + shard_size, num_samples)) for s in range(0, num_samples, shard_size)]
