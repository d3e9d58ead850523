import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from shared import dist

pytestmark = pytest.mark.dist


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    info = dist.init("cpu")
    assert info.source == "torchrun" and dist.world_size() == world and dist.rank() == rank
    # each rank holds x_r = (r+1) * [1, 2]; loss = sum over ranks' rows of w . gathered
    x = torch.tensor([[1.0, 2.0]]) * (rank + 1)
    x.requires_grad_(True)
    gathered = dist.all_gather_with_grad(x)
    weights = torch.tensor([[1.0, 1.0], [10.0, 10.0]])[:world]
    loss = (gathered * weights).sum() * (rank + 1)  # a different loss per rank
    loss.backward()
    mean = dist.all_reduce_mean(torch.tensor([float(rank)]))
    torch.save({"gathered": gathered.detach(), "grad": x.grad, "mean": mean}, f"{out}/r{rank}.pt")
    dist.cleanup()


def test_gather_with_grad_two_processes(tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    r0, r1 = (torch.load(tmp_path / f"r{r}.pt") for r in range(world))
    assert torch.equal(r0["gathered"], torch.tensor([[1.0, 2.0], [2.0, 4.0]]))
    assert torch.equal(r0["gathered"], r1["gathered"])
    # d(sum_r loss_r)/d x_k = w_k * sum_r (r + 1) = w_k * 3
    assert torch.allclose(r0["grad"], torch.tensor([[3.0, 3.0]]))
    assert torch.allclose(r1["grad"], torch.tensor([[30.0, 30.0]]))
    assert r0["mean"].item() == pytest.approx(0.5)


def test_single_process_fallbacks(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_STEP_ID"):
        monkeypatch.delenv(k, raising=False)
    info = dist.init("cpu")
    assert info.source == "single" and info.world_size == 1
    x = torch.ones(2, requires_grad=True)
    assert dist.all_gather_with_grad(x) is x and dist.is_main()


def test_slurm_env_is_read_only_inside_a_step(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(k, "")  # recorded, so that teardown removes what the code under test exports
        monkeypatch.delenv(k)
    # sbatch without srun: SLURM variables but no step -> one process
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.delenv("SLURM_STEP_ID", raising=False)
    assert dist._env_from_slurm() is False
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "12345")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node07")
    assert dist._env_from_slurm() is True
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("3", "4", "1")
    assert os.environ["MASTER_PORT"] == str(20000 + 12345 % 40000)


def test_per_rank_batch_splits_evenly_or_refuses(monkeypatch):
    assert dist.per_rank_batch(12) == 12
    monkeypatch.setattr(dist, "world_size", lambda: 4)
    assert dist.per_rank_batch(4096) == 1024
    with pytest.raises(ValueError, match="not divisible by the 4 processes"):
        dist.per_rank_batch(4095)
