import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from projects.minred.streams import split_for_rank, stream_order

pytestmark = pytest.mark.timeout(60)


def test_stream_kinds():
    assert stream_order("temporal", 5) == [0, 1, 2, 3, 4]
    iid = stream_order("iid", 50, seed=3)
    assert sorted(iid) == list(range(50)) and iid == torch.randperm(50, generator=torch.Generator().manual_seed(3)).tolist()
    assert stream_order("iid", 50, seed=3, epoch=1) != iid
    seq = stream_order("sequential", 40, seed=1, n_seq=8)
    blocks = [seq[i:i + 8] for i in range(0, 40, 8)]
    assert sorted(seq) == list(range(40)) and all(b == list(range(b[0], b[0] + 8)) and b[0] % 8 == 0 for b in blocks)
    labels = np.repeat(np.arange(4), 24)
    cs = stream_order("class_sequential", 96, seed=0, n_seq=8, labels=labels)
    assert sorted(cs) == list(range(96))
    chunks = [labels[cs[i:i + 8]] for i in range(0, 96, 8)]
    assert all(len(set(c.tolist())) == 1 for c in chunks)  # every chunk is one class
    assert len({int(c[0]) for c in chunks[:6]}) > 1  # classes interleave (a random class per chunk)
    with pytest.raises(ValueError, match="data.stream"):
        stream_order("shuffled", 10)


def test_whole_batches_round_robin():
    order = list(range(100, 150))
    r0, r1 = split_for_rank(order, 4, 0, 2), split_for_rank(order, 4, 1, 2)
    assert r0[:8] == [100, 101, 102, 103, 108, 109, 110, 111] and r1[:4] == [104, 105, 106, 107]
    assert len(r0) == len(r1) == 24  # 50 -> 6 rounds of 2 x 4
    # video blocks are dealt whole; one round fewer when the block count divides evenly (official quirk)
    seq = list(range(64))
    b0, b1 = split_for_rank(seq, 8, 0, 2, n_seq=8), split_for_rank(seq, 8, 1, 2, n_seq=8)
    assert b0 == list(range(0, 8)) + list(range(16, 24)) + list(range(32, 40)) and len(b1) == 24


def _worker(rank, world, port, out):
    import torch.distributed as dist

    from projects.minred.buffer import build_buffer
    from projects.minred.streams import rank_stream

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    r, w = dist.get_rank(), dist.get_world_size()
    buf = build_buffer("none", rank_stream("iid", 64, 8, r, w, seed=0), 8 // w, 0, 1, 0, r, w)
    batches = [[i for i, _ in b] for b in buf]
    gathered = [None] * world
    dist.all_gather_object(gathered, batches)
    if rank == 0:
        torch.save(gathered, out)
    dist.destroy_process_group()


@pytest.mark.dist
@pytest.mark.timeout(150)
def test_round_robin_across_two_gloo_processes(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    out = tmp_path / "b.pt"
    mp.spawn(_worker, args=(2, port, str(out)), nprocs=2, join=True)
    b0, b1 = torch.load(out)
    order = stream_order("iid", 64, seed=0)
    per_rank_batch = 4
    batches = [order[i:i + per_rank_batch] for i in range(0, 64, per_rank_batch)]
    assert b0 == batches[0::2] and b1 == batches[1::2]
