
from shared.data.robust import BadSample, BadSampleMonitor, TooManyBadSamples, collate_skipping_bad
from shared.data.sampling import ResumableSampler

import pytest


def test_order_and_seeds_are_functions_of_seed_and_epoch():
    a, b = ResumableSampler(10, seed=3, rank=0, world_size=1), ResumableSampler(10, seed=3, rank=0, world_size=1)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b)
    b.set_epoch(2)
    assert [i for i, _ in a] != [i for i, _ in b]
    assert sorted(i for i, _ in a) == list(range(10))


def test_resume_mid_epoch_continues_the_same_sequence():
    s = ResumableSampler(10, seed=0, rank=0, world_size=1)
    s.set_epoch(4)
    full = list(s)
    s.set_epoch(4, start=6)
    assert list(s) == full[6:] and len(s) == 4


def test_sharding_covers_everything_once():
    shards = []
    for r in range(3):
        s = ResumableSampler(9, seed=1, rank=r, world_size=3)
        s.set_epoch(0)
        shards.append([i for i, _ in s])
    assert sorted(sum(shards, [])) == list(range(9))
    dropped = ResumableSampler(10, seed=1, rank=0, world_size=3, drop_last=True)
    assert len(dropped) == 3


def test_bad_samples_are_dropped_counted_and_limited():
    items = [{"x": 1}, BadSample("id7", "cannot decode"), {"x": 2}]
    batch = collate_skipping_bad(items)
    assert batch["x"].tolist() == [1, 2] and [b.key for b in batch["bad"]] == ["id7"]
    mon = BadSampleMonitor(max_fraction=0.5)
    mon.update(2, batch["bad"])
    assert mon.summary() == {"train/bad_samples": 1, "train/samples_seen": 3}
    with pytest.raises(TooManyBadSamples, match="id7"):
        mon.update(0, [BadSample("id8", "x"), BadSample("id9", "y")])
