"""Multi-view data: the MultiView dataset, its batches, and the SSL augmentations."""
import os

import numpy as np
import paddle
import pytest
from PIL import Image

import passl_mixer as pm
from passl_mixer.data import build_dataloader
from passl_mixer.data.views import ColorJitter, GaussianBlur, RandomGrayscale, Solarize

CROP = {"name": "RandomResizedCrop", "size": 16, "scale": [0.3, 1.0]}
VIEW_A = [CROP, {"name": "ColorJitter", "prob": 1.0}, {"name": "GaussianBlur", "prob": 1.0},
          {"name": "Normalize"}]
VIEW_B = [CROP, {"name": "RandomGrayscale", "prob": 1.0}, {"name": "Solarize", "prob": 1.0},
          {"name": "Normalize"}]


def multiview_cfg(tiny_data, views=(VIEW_A, VIEW_B)):
    return {"name": "MultiView", "dataset": {"name": "ImageFolder",
                                             "root": os.path.join(tiny_data, "train")},
            "views": [list(v) for v in views]}


def rgb_image(seed=0, size=16):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3)).astype(np.uint8), "RGB")


def test_loader_batches_are_a_list_of_views_and_labels(tiny_data):
    loader = build_dataloader({"dataset": multiview_cfg(tiny_data), "batch_size": 8}, train=True,
                              seed=0, world_size=1, rank=0)
    loader.set_epoch(0)
    views, labels = next(iter(loader))
    assert isinstance(views, list) and len(views) == 2
    assert all(list(v.shape) == [8, 3, 16, 16] and v.dtype == paddle.float32 for v in views)
    assert list(labels.shape) == [8]
    assert not np.allclose(views[0].numpy(), views[1].numpy())


def test_views_depend_only_on_seed_epoch_index_and_view(tiny_data):
    ds = pm.DATASETS.build(multiview_cfg(tiny_data), seed=5)
    first, label = ds[3]
    assert len(first) == 2 and first[0].shape == (3, 16, 16) and first[0].dtype == np.float32
    again, _ = pm.DATASETS.build(multiview_cfg(tiny_data), seed=5)[3]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    ds.set_epoch(1)
    assert not np.array_equal(ds[3][0][0], first[0])
    # the same recipe twice still gives two different views (each view has its own generator)
    same = pm.DATASETS.build(multiview_cfg(tiny_data, views=(VIEW_A, VIEW_A)), seed=5)
    v0, v1 = same[3][0]
    assert not np.array_equal(v0, v1)


def test_multiview_rejects_misplaced_transforms(tiny_data):
    with pytest.raises(pm.ConfigError, match="dataset.views"):
        pm.DATASETS.build(multiview_cfg(tiny_data), transforms=[{"name": "Normalize"}])
    with pytest.raises(pm.ConfigError, match="at least two"):
        pm.DATASETS.build(multiview_cfg(tiny_data, views=(VIEW_A,)))
    inner = dict(multiview_cfg(tiny_data))
    inner["dataset"] = dict(inner["dataset"], transforms=[{"name": "Normalize"}])
    with pytest.raises(pm.ConfigError, match="must not set"):
        pm.DATASETS.build(inner)


@pytest.mark.parametrize("t", [ColorJitter(prob=0.0), RandomGrayscale(prob=0.0),
                               GaussianBlur(prob=0.0), Solarize(prob=0.0)])
def test_prob_zero_is_identity(t):
    img = rgb_image()
    assert t(img, np.random.default_rng(0)) is img


def test_solarize_inverts_values_at_or_above_the_threshold():
    img = Image.fromarray(np.array([[[0, 127, 128], [200, 255, 10]]], dtype=np.uint8), "RGB")
    out = np.asarray(Solarize(threshold=128, prob=1.0)(img, np.random.default_rng(0)))
    assert out.tolist() == [[[0, 127, 127], [55, 0, 10]]]


def test_grayscale_gives_equal_channels_with_the_luma():
    img = rgb_image()
    out = np.asarray(RandomGrayscale(prob=1.0)(img, np.random.default_rng(0)))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    np.testing.assert_array_equal(out[..., 0], np.asarray(img.convert("L")))


def test_blur_smooths_and_color_jitter_changes_colours_reproducibly():
    img = rgb_image()
    blurred = np.asarray(GaussianBlur(sigma=[1.0, 1.0], prob=1.0)(img, np.random.default_rng(0)),
                         dtype=np.float32)
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.5 * np.abs(
        np.diff(np.asarray(img, dtype=np.float32), axis=1)).mean()
    jitter = ColorJitter(0.4, 0.4, 0.4, 0.1, prob=1.0)
    a = np.asarray(jitter(img, np.random.default_rng(1)))
    b = np.asarray(jitter(img, np.random.default_rng(1)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, np.asarray(img))


@pytest.mark.parametrize("cls,kwargs", [(ColorJitter, {"hue": 0.7}), (GaussianBlur, {"prob": 2}),
                                        (Solarize, {"threshold": 300})])
def test_bad_arguments_are_config_errors(cls, kwargs):
    with pytest.raises(pm.ConfigError):
        cls(**kwargs)


def test_transforms_need_pil_images():
    with pytest.raises(pm.ConfigError, match="before Normalize"):
        Solarize(prob=1.0)(np.zeros((3, 4, 4), np.float32), np.random.default_rng(0))
