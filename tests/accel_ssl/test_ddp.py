import os
import socket

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp


def _worker(rank: int, world: int, port: int, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    from projects.accel_ssl.train import equal_across_ranks

    n = 3 if rank == 1 else 4  # one unreadable image dropped from rank 1's batch
    views = [torch.full((n, 1, 2, 2), float(rank)), torch.full((n, 1, 2, 2), float(rank) + 10)]
    views, dropped = equal_across_ranks(views, torch.device("cpu"))
    gathered = [torch.empty(3, 1, 2, 2) for _ in range(world)]
    tdist.all_gather(gathered, views[0].contiguous())  # would fail / hang with unequal shapes
    out.put((rank, [tuple(v.shape) for v in views], dropped))
    tdist.destroy_process_group()


@pytest.mark.dist
@pytest.mark.timeout(120)
def test_an_unreadable_image_does_not_leave_ranks_with_unequal_batches():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    res = sorted(q.get(timeout=100) for _ in procs)
    for p in procs:
        p.join(30)
    assert res == [(0, [(3, 1, 2, 2), (3, 1, 2, 2)], 1), (1, [(3, 1, 2, 2), (3, 1, 2, 2)], 0)]
