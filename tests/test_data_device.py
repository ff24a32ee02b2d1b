"""The fast input path: reduced JPEG decode under RandomResizedCrop, uint8 batches normalised
and erased on the device, persistent workers."""
import numpy as np
import paddle
import pytest
from PIL import Image

from passl_mixer.data import ImageFolder, RandomErasing, RandomResizedCrop, build_dataloader
from passl_mixer.data.device import ERASE_STREAM, DeviceBatchStage, split_batch_tail
from passl_mixer.data.transforms import build_transforms

RECIPE = [dict(name="RandomResizedCrop", size=24, interpolation="bicubic"),
          dict(name="RandomHorizontalFlip"), dict(name="RandAugment", num_ops=2, magnitude=15),
          dict(name="Normalize", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])]


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """12 smooth 'photos' of 320x240 as JPEGs (a 48 px crop allows a 1/2 or 1/4 decode)."""
    root = tmp_path_factory.mktemp("photos")
    ys, xs = np.mgrid[0:240, 0:320].astype(np.float32)
    for i in range(12):
        rng = np.random.default_rng(i)
        coarse = rng.uniform(0, 255, (5, 7, 3)).astype(np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((320, 240), Image.BICUBIC), np.float32)
        pixels = field + (xs / 320 * 50)[..., None] + rng.normal(0, 4, field.shape)
        path = root / f"c{i % 2}" / f"{i:02d}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
    return str(root)


def section(root, transforms, **kwargs):
    return dict(dataset=dict(name="ImageFolder", root=root), transforms=transforms,
                batch_size=4, **kwargs)


def epoch_arrays(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.numpy(), y.numpy()) for x, y in loader]


def test_reduced_decode_keeps_the_crop_boxes_and_nearly_the_pixels(photo_folder):
    crop_then_flip = [dict(name="RandomResizedCrop", size=48), dict(name="RandomHorizontalFlip")]
    reduced = ImageFolder(photo_folder, transforms=crop_then_flip, seed=7)
    full = ImageFolder(photo_folder, transforms=[dict(crop_then_flip[0], reduced_decode=False),
                                                 crop_then_flip[1]], seed=7)
    crop = reduced.transforms.transforms[0]
    scales, diffs = [], []
    for epoch in range(3):
        reduced.set_epoch(epoch)
        full.set_epoch(epoch)
        for i in range(len(reduced)):
            # the box the recipe draws on the full-size image, from the sample's generator
            box = crop.crop_box(320, 240, np.random.default_rng([7, epoch, i]))
            scales.append(crop.decode_scale(320, 240, box))
            a, b = reduced[i][0], full[i][0]
            assert a.shape == b.shape == (3, 48, 48)
            diffs.append(np.abs(a - b).mean())
    assert 4 in scales and 2 in scales and 1 in scales  # every path was exercised
    # Same boxes, same flips (a flip or another box would differ by tens of levels); only the
    # resampling source differs: within a gray level or two on average.
    assert max(diffs) < 3.0, diffs
    assert np.mean(diffs) < 1.5


def test_decode_scale_never_goes_below_the_output_size():
    crop = RandomResizedCrop(size=[50, 40])
    assert crop.decode_scale(1000, 800, (0, 0, 320, 400)) == 8
    assert crop.decode_scale(1000, 800, (0, 0, 319, 400)) == 4
    assert crop.decode_scale(1000, 800, (0, 0, 100, 99)) == 1
    # PIL's draft picks min(width // w, height // h): a scale it would not give is not used
    assert crop.decode_scale(17, 1000, (0, 0, 17, 1000)) == 1


def test_uint8_batches_normalised_on_the_device_equal_the_float_pipeline(photo_folder):
    for workers in (0, 2):
        device = build_dataloader(section(photo_folder, RECIPE, num_workers=workers),
                                  train=True, seed=3, world_size=1, rank=0)
        cpu = build_dataloader(section(photo_folder, RECIPE, device_normalize=False),
                               train=True, seed=3, world_size=1, rank=0)
        assert device.dataset.output_dtype == np.uint8 and device.device_stages[0].normalize
        assert cpu.device_stages is None
        for epoch in (0, 1):
            a, b = epoch_arrays(device, epoch), epoch_arrays(cpu, epoch)
            assert len(a) == len(b) == 3
            for (xa, ya), (xb, yb) in zip(a, b):
                assert xa.dtype == xb.dtype == np.float32
                assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
        device.close()


@pytest.mark.parametrize("mode", ["pixel", "rand", "const"])
def test_device_erasing_erases_as_the_per_sample_transform(mode):
    normalize, erase = build_transforms([dict(name="Normalize"), dict(
        name="RandomErasing", prob=0.7, mode=mode, max_count=2)]).transforms
    stage = DeviceBatchStage([normalize, erase], seed=5, view=1)
    images = np.random.default_rng(0).integers(0, 256, (6, 3, 16, 12), dtype=np.uint8)
    indices, epoch = [3, 9, 4, 0, 11, 2], 2
    out = stage(images, indices, epoch).numpy()
    erased = 0
    for row, index in enumerate(indices):
        rng = np.random.default_rng([5, epoch, index, ERASE_STREAM + 1])
        plain = normalize(Image.fromarray(images[row].transpose(1, 2, 0)), None)
        expected = erase(plain, rng)
        assert np.array_equal(out[row], expected)
        erased += not np.array_equal(expected, plain)
    assert erased >= 2  # the test saw erasing happen


def test_split_batch_tail():
    pipeline = build_transforms(RECIPE + [dict(name="RandomErasing")])
    head, tail = split_batch_tail(pipeline)
    assert [type(t).__name__ for t in tail] == ["Normalize", "RandomErasing"]
    assert len(head.transforms) == 3
    no_normalize = build_transforms(RECIPE[:3])
    assert split_batch_tail(no_normalize) == (no_normalize, [])
    assert isinstance(tail[1], RandomErasing)


def test_persistent_workers_give_the_same_batches_every_epoch(photo_folder):
    cfg = section(photo_folder, RECIPE + [dict(name="RandomErasing", prob=0.5)])
    serial = build_dataloader(cfg, train=True, seed=1, world_size=1, rank=0)
    workers = build_dataloader(dict(cfg, num_workers=2), train=True, seed=1, world_size=1, rank=0)
    expected = {epoch: epoch_arrays(serial, epoch) for epoch in (0, 1)}
    pids = None
    for epoch in (0, 1, 0):
        got = epoch_arrays(workers, epoch)
        for (xa, ya), (xb, yb) in zip(got, expected[epoch]):
            assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
        now = [p.pid for p in workers._workers]
        assert pids is None or now == pids  # the same processes, kept across epochs
        pids = now
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(expected[0], expected[1]))
    workers.close()


def test_multi_view_batches_are_normalised_on_the_device(photo_folder):
    view = [dict(name="RandomResizedCrop", size=16), dict(name="Normalize")]
    cfg = dict(dataset=dict(name="MultiView", dataset=dict(name="ImageFolder", root=photo_folder),
                            views=[view, view]), batch_size=4)
    device = build_dataloader(cfg, train=True, seed=2, world_size=1, rank=0)
    cpu = build_dataloader(dict(cfg, device_normalize=False), train=True, seed=2, world_size=1,
                           rank=0)
    device.set_epoch(0)
    cpu.set_epoch(0)
    for (views_a, la), (views_b, lb) in zip(device, cpu):
        assert len(views_a) == 2 and all(v.dtype == paddle.float32 for v in views_a)
        for a, b in zip(views_a, views_b):
            assert np.array_equal(a.numpy(), b.numpy())
        assert np.array_equal(la.numpy(), lb.numpy())
