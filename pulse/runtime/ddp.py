"""Several processes under `torchrun`: DistributedDataParallel, gloo on CPU and NCCL on CUDA.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them training is one process.
Each rank draws its own share of every global batch (see pulse.tasks.base), DDP
averages the gradients, and only rank 0 logs and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from pulse.errors import PulseError


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise PulseError("train.device = \"cuda\" but no CUDA device is available; use \"auto\" or \"cpu\".")
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def world_size() -> int:
    """How many processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(preference: str = "auto") -> Dist:
    """Join the process group torchrun describes (if any) and pick this rank's device."""
    world = world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(preference, local_rank)
    if world <= 1:
        return Dist(0, 1, 0, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device, owns)


def teardown(d: Dist) -> None:
    if d.owns_group and dist.is_initialized():
        # every rank reaches here before any rank closes its connections
        dist.barrier()
        dist.destroy_process_group()


def exit_worker(code: int = 0) -> None:
    """End a torchrun worker process without interpreter finalization.

    Gloo's C++ threads can still hold work objects at exit; destroying them while the
    interpreter is torn down sometimes aborts the process (SIGABRT, "terminate called
    without an active exception") after a run that finished correctly. Everything this
    process writes is already flushed to disk atomically, so a direct exit loses nothing.
    """
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def wrap(module: nn.Module, d: Dist, *, find_unused: bool = False) -> nn.Module:
    """DDP around `module`; find_unused when some parameters may get no gradient (an LM head under a task head)."""
    if not d.active:
        return module
    return DistributedDataParallel(
        module, device_ids=[d.device.index] if d.device.type == "cuda" else None, find_unused_parameters=find_unused
    )


def all_sum(values: Tensor, d: Dist) -> Tensor:
    """Sum a tensor over ranks (in place; returned for convenience)."""
    if d.active:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_keys(keys: list[str], d: Dist) -> list[str]:
    """The sorted union of every rank's keys."""
    if not d.active:
        return sorted(keys)
    gathered: list[list[str] | None] = [None] * d.world
    dist.all_gather_object(gathered, keys)
    return sorted({k for ks in gathered for k in (ks or [])})


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()
