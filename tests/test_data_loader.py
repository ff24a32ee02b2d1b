import os

import numpy as np
import paddle
import pytest
from PIL import Image

from passl_mixer.data import (DistributedBatchSampler, Loader, build_dataloader,
                              loader_throughput, write_synthetic_jpegs)
from passl_mixer.errors import ConfigError, DataError

AUGMENT = [dict(name="RandomResizedCrop", size=8), dict(name="RandomHorizontalFlip"),
           dict(name="Normalize"), dict(name="RandomErasing", prob=0.5)]
# Sample i is a flat gray image of value i; with this "normalization" its pixels read back as i.
IDENTITY = [dict(name="Normalize", mean=[0, 0, 0], std=[1, 1, 1], scale=1.0)]


@pytest.fixture
def numbered_folder(tmp_path):
    """23 flat images in 3 classes; ImageFolder index i holds pixel value i."""
    for i in range(23):
        path = tmp_path / f"c{i // 8}" / f"{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((6, 6), i, dtype=np.uint8)).save(path)
    return str(tmp_path)


def section(root, **kwargs):
    return dict(dataset=dict(name="ImageFolder", root=root), **kwargs)


def batches(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("drop_last", [True, False])
def test_union_of_rank_batches_is_the_single_process_batch(drop_last):
    n, per_rank, replicas = 53, 4, 2
    single = DistributedBatchSampler(n, per_rank * replicas, shuffle=True, seed=5,
                                     drop_last=drop_last)
    ranks = [DistributedBatchSampler(n, per_rank, num_replicas=replicas, rank=r, shuffle=True,
                                     seed=5, drop_last=drop_last) for r in range(replicas)]
    for epoch in (0, 1):
        reference = batches(single, epoch)
        per_rank_batches = [batches(s, epoch) for s in ranks]
        assert len(per_rank_batches[0]) == len(per_rank_batches[1]) == len(reference)
        for k, expected in enumerate(reference):
            union = per_rank_batches[0][k] + per_rank_batches[1][k]
            if drop_last or k < len(reference) - 1:
                assert union == expected
            else:  # the last global batch: the same samples, then padding
                assert union[:len(expected)] == expected
                assert len(per_rank_batches[0][k]) == len(per_rank_batches[1][k])


def test_sampler_epochs_seeds_and_no_shuffle():
    s = DistributedBatchSampler(20, 5, seed=1)
    e0, e0_again, e1 = batches(s, 0), batches(s, 0), batches(s, 1)
    assert e0 == e0_again and e0 != e1
    assert sorted(sum(e0, [])) == list(range(20))
    assert batches(DistributedBatchSampler(20, 5, seed=2), 0) != e0
    ordered = DistributedBatchSampler(20, 5, shuffle=False)
    assert sum(batches(ordered, 3), []) == list(range(20))


def test_sampler_padding_and_valid_counts():
    # 11 samples, 3 ranks of 2: global batches of 6, the last one 5 real + 1 padding.
    samplers = [DistributedBatchSampler(11, 2, num_replicas=3, rank=r, shuffle=False,
                                        drop_last=False) for r in range(3)]
    assert [len(s) for s in samplers] == [2, 2, 2]
    assert [list(s) for s in samplers] == [[[0, 1], [6, 7]], [[2, 3], [8, 9]], [[4, 5], [10, 0]]]
    assert [[s.num_valid(k) for k in range(2)] for s in samplers] == [[2, 2], [2, 2], [2, 1]]
    with pytest.raises(IndexError):
        samplers[0].num_valid(2)
    dropped = DistributedBatchSampler(11, 2, num_replicas=3, rank=2, shuffle=False)
    assert list(dropped) == [[4, 5]] and dropped.num_valid(0) == 2


def test_sampler_rejects_impossible_settings():
    with pytest.raises(DataError, match="fewer than one global batch"):
        DistributedBatchSampler(7, 4, num_replicas=2)
    with pytest.raises(DataError, match="rank"):
        DistributedBatchSampler(8, 4, num_replicas=2, rank=2)
    assert isinstance(DistributedBatchSampler(8, 4), paddle.io.BatchSampler)


def collect(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.numpy(), y.numpy()) for x, y in loader]


def test_loader_yields_tensors_and_reports_sizes(numbered_folder):
    loader = build_dataloader(section(numbered_folder, transforms=AUGMENT, batch_size=4),
                              train=True, world_size=1, rank=0)
    assert isinstance(loader, Loader)
    assert len(loader) == 5 and loader.batch_size == 4 and loader.global_batch_size == 4
    assert loader.num_samples == 23 and len(loader.dataset) == 23
    loader.set_epoch(0)
    images, labels = next(iter(loader))
    assert isinstance(images, paddle.Tensor) and images.shape == [4, 3, 8, 8]
    assert images.dtype == paddle.float32 and labels.dtype == paddle.int64
    assert labels.shape == [4]


def test_defaults_differ_for_train_and_eval(numbered_folder):
    train = build_dataloader(section(numbered_folder, batch_size=4), train=True, world_size=1,
                             rank=0)
    val = build_dataloader(section(numbered_folder, batch_size=4), train=False, world_size=1,
                           rank=0)
    assert train.batch_sampler.shuffle and train.batch_sampler.drop_last and len(train) == 5
    assert not val.batch_sampler.shuffle and not val.batch_sampler.drop_last and len(val) == 6


def test_same_batches_with_zero_and_two_workers(numbered_folder):
    cfg = section(numbered_folder, transforms=AUGMENT, batch_size=4)
    serial = build_dataloader(dict(cfg, num_workers=0), train=True, seed=3, world_size=1, rank=0)
    parallel = build_dataloader(dict(cfg, num_workers=2), train=True, seed=3, world_size=1, rank=0)
    a, b = collect(serial, 4), collect(parallel, 4)
    assert len(a) == len(b) == 5
    for (xa, ya), (xb, yb) in zip(a, b):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert parallel._pool.piped_arrays == 0  # the workers' shared-memory slots carried them
    c = collect(parallel, 5)
    assert not all(np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_slots_are_sized_from_the_pipelines_fixed_output(numbered_folder, tiny_data):
    def sample_nbytes(cfg, **kwargs):
        return build_dataloader(dict(cfg, **kwargs), train=True, world_size=1,
                                rank=0).sample_nbytes

    cfg = section(numbered_folder, transforms=AUGMENT, batch_size=4)
    assert sample_nbytes(cfg) == 3 * 8 * 8  # uint8: Normalize and erasing run on the device
    assert sample_nbytes(cfg, device_normalize=False) == 3 * 8 * 8 * 4  # float32
    # images of one size and no resize: the size is not known before loading, no slots
    assert sample_nbytes(section(numbered_folder, transforms=IDENTITY, batch_size=4)) is None
    crop = [dict(name="RandomResizedCrop", size=16), dict(name="Normalize")]
    views = dict(name="MultiView", views=[crop, [dict(crop[0], size=8), crop[1]]],
                 dataset=dict(name="ImageFolder", root=os.path.join(tiny_data, "train")))
    assert sample_nbytes(dict(dataset=views, batch_size=4)) == 3 * 16 * 16 + 3 * 8 * 8


def test_two_ranks_see_exactly_what_one_process_sees(numbered_folder):
    cfg = section(numbered_folder, transforms=AUGMENT)
    single = build_dataloader(dict(cfg, batch_size=6), train=True, seed=9, world_size=1, rank=0)
    ranks = [build_dataloader(dict(cfg, batch_size=3), train=True, seed=9, world_size=2, rank=r)
             for r in range(2)]
    reference = collect(single, 1)
    halves = [collect(loader, 1) for loader in ranks]
    assert len(reference) == len(halves[0]) == len(halves[1]) == 3
    for k, (x, y) in enumerate(reference):
        assert np.array_equal(x, np.concatenate([halves[0][k][0], halves[1][k][0]]))
        assert np.array_equal(y, np.concatenate([halves[0][k][1], halves[1][k][1]]))


@pytest.mark.parametrize("world_size,batch_size", [(2, 4), (3, 2), (2, 16)])
def test_eval_over_ranks_counts_each_sample_once(numbered_folder, world_size, batch_size):
    seen, total = [], 0
    for rank in range(world_size):
        loader = build_dataloader(section(numbered_folder, transforms=IDENTITY,
                                          batch_size=batch_size),
                                  train=False, world_size=world_size, rank=rank)
        loader.set_epoch(0)
        for k, (images, labels) in enumerate(loader):
            n = loader.num_valid(k)  # the documented rule
            seen.extend(int(v) for v in images.numpy()[:n, 0, 0, 0])
            total += n
    assert total == loader.num_samples == 23
    assert sorted(seen) == list(range(23))


def test_section_errors_name_the_key(numbered_folder):
    with pytest.raises(ConfigError) as err:
        build_dataloader(section(numbered_folder, batch_size=4, num_worker=2), train=True,
                         world_size=1, rank=0)
    assert "'data.train.num_worker'" in str(err.value) and "num_workers" in str(err.value)
    with pytest.raises(ConfigError, match="batch_size"):
        build_dataloader(section(numbered_folder), train=True, world_size=1, rank=0)
    with pytest.raises(ConfigError, match="transforms"):
        build_dataloader(dict(dataset=dict(name="ImageFolder", root=numbered_folder,
                                           transforms=[]), batch_size=4),
                         train=True, world_size=1, rank=0)
    with pytest.raises(DataError, match=os.path.join(numbered_folder, "missing")):
        build_dataloader(section(os.path.join(numbered_folder, "missing"), batch_size=4),
                         train=True, world_size=1, rank=0)


def test_world_size_and_rank_default_to_paddle_distributed(numbered_folder):
    loader = build_dataloader(section(numbered_folder, batch_size=4), train=True)
    assert loader.batch_sampler.num_replicas == paddle.distributed.get_world_size() == 1
    assert loader.batch_sampler.rank == paddle.distributed.get_rank() == 0


def test_benchmark_helpers(tmp_path):
    paths = write_synthetic_jpegs(str(tmp_path / "a"), 6, size=(30, 40), num_classes=3, seed=1)
    assert len(paths) == 6 and paths[4].endswith(os.path.join("class_001", "img_000004.JPEG"))
    img = Image.open(paths[0])
    assert img.format == "JPEG" and img.size == (40, 30)
    assert np.asarray(img).std() > 10  # not a flat image
    again = write_synthetic_jpegs(str(tmp_path / "b"), 1, size=(30, 40), seed=1)
    assert open(again[0], "rb").read() == open(paths[0], "rb").read()
    result = loader_throughput(str(tmp_path / "a"), [dict(name="RandomResizedCrop", size=16),
                                                      dict(name="Normalize")],
                               batch_size=2, num_workers=0, num_batches=5)
    assert result["images"] == 10 and result["img_per_s"] > 0 and result["dataset_size"] == 6
