"""Process-group set-up and rank helpers.

Init order: torchrun's variables first (processes started by torchrun inside a SLURM allocation
all inherit SLURM_PROCID=0), then a SLURM step with one task per GPU (srun or submitit), then a
single process with no process group (collectives become no-ops).
"""
from __future__ import annotations

import datetime
import os
import random
import subprocess
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as tdist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    source: str = "single"


_INFO = DistInfo()


def _slurm_master_addr() -> str:
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST", "")
    try:
        out = subprocess.check_output(["scontrol", "show", "hostnames", nodelist], text=True)
        return out.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return nodelist.split(",")[0].split("[")[0] or "127.0.0.1"


def _env_from_slurm() -> bool:
    """Export torch's env:// variables from a multi-task SLURM step; False when not in one."""
    ntasks = int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS", "1"))
    if "SLURM_PROCID" not in os.environ or "SLURM_STEP_ID" not in os.environ or ntasks <= 1:
        return False
    job_id = int(os.environ.get("SLURM_JOB_ID", "0"))
    os.environ.setdefault("MASTER_ADDR", _slurm_master_addr())
    os.environ.setdefault("MASTER_PORT", str(20000 + job_id % 40000))
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = str(ntasks)
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    return True


def init(device: str = "auto", timeout_min: int = 30) -> DistInfo:
    """Initialise the process group if this process is one of several; return rank information."""
    global _INFO
    want_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        source = "torchrun"
    elif _env_from_slurm():
        source = "slurm"
    else:
        source = "single"
    if source == "single" or int(os.environ["WORLD_SIZE"]) == 1:
        dev = torch.device("cuda", 0) if want_cuda else torch.device("cpu")
        if want_cuda:
            torch.cuda.set_device(dev)
        _INFO = DistInfo(device=dev, source="single")
        return _INFO
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if want_cuda:
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not tdist.is_initialized():
        tdist.init_process_group(
            backend="nccl" if want_cuda else "gloo", init_method="env://", rank=rank, world_size=world,
            timeout=datetime.timedelta(minutes=timeout_min),
        )
    _INFO = DistInfo(rank=rank, world_size=world, local_rank=local, device=dev, source=source)
    return _INFO


def info() -> DistInfo:
    return _INFO


def is_dist() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if is_dist() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_dist() else 1


def per_rank_batch(global_batch: int) -> int:
    """The batch each process loads for a global batch of ``global_batch`` (an error unless it divides evenly)."""
    world = world_size()
    if global_batch % world:
        raise ValueError(f"optim.batch_size={global_batch} is not divisible by the {world} processes")
    return global_batch // world


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_dist():
        tdist.barrier()


def cleanup() -> None:
    if is_dist():
        tdist.destroy_process_group()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    if not is_dist():
        return x
    x = x.detach().clone()
    tdist.all_reduce(x)
    return x / world_size()


def all_gather_object(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (picklable objects; ``[obj]`` on one process)."""
    if not is_dist():
        return [obj]
    out = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if not is_dist():
        return x
    x = x.detach().clone()
    tdist.all_reduce(x)
    return x


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out = [torch.empty_like(x) for _ in range(tdist.get_world_size())]
        tdist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        # Every rank computed a loss on the gathered tensor; the gradient of the summed objective
        # w.r.t. this rank's input is the sum over ranks of their gradient for our slice.
        g = torch.stack(grads)
        tdist.all_reduce(g)
        return g[tdist.get_rank()]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0; gradients flow back to every rank's slice."""
    if not is_dist():
        return x
    return torch.cat(_GatherWithGrad.apply(x), dim=0)


def seed_all(seed: int, rank_offset: bool = True) -> None:
    s = seed + (rank() if rank_offset else 0)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def set_deterministic(on: bool) -> None:
    if not on and not torch.are_deterministic_algorithms_enabled():
        # the default: skip use_deterministic_algorithms, whose first call imports torch._inductor (~2 s)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on
    torch.backends.cuda.matmul.allow_tf32 = not on
    torch.backends.cudnn.allow_tf32 = not on
