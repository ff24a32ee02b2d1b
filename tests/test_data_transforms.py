import numpy as np
import pytest
from PIL import Image

from passl_mixer.data import (CenterCrop, INTERPOLATIONS, Normalize, RandAugment, RandomErasing,
                              RandomHorizontalFlip, RandomResizedCrop, Resize, ResizeForEval,
                              build_transforms)
from passl_mixer.data.randaugment import OPS
from passl_mixer.errors import ConfigError
from passl_mixer.registry import TRANSFORMS


def rng(seed=0):
    return np.random.default_rng(seed)


def photo(width=40, height=30, seed=0):
    """A low-contrast RGB image with structure, so that every RandAugment op changes it."""
    g = np.random.default_rng(seed)
    base = g.integers(60, 190, size=(height, width, 3)).astype(np.uint8)
    base[:, : width // 2] //= 2  # a left/right difference, so flips and shifts show
    return Image.fromarray(base, "RGB")


def pixels(img):
    return np.asarray(img)


def test_all_transforms_are_registered():
    for name in ("RandomResizedCrop", "RandomHorizontalFlip", "Resize", "CenterCrop",
                 "ResizeForEval", "RandAugment", "Normalize", "RandomErasing"):
        assert name in TRANSFORMS


def test_unknown_interpolation_lists_the_accepted_names():
    with pytest.raises(ConfigError) as err:
        build_transforms([dict(name="Resize", size=8, interpolation="cubic")])
    for name in INTERPOLATIONS:
        assert name in str(err.value)


@pytest.mark.parametrize("name", sorted(INTERPOLATIONS))
def test_every_interpolation_name_works(name):
    out = Resize([5, 7], interpolation=name)(photo(), rng())
    assert out.size == (7, 5)


def test_random_resized_crop_size_and_reproducibility():
    t = RandomResizedCrop(16)
    a, b, c = t(photo(), rng(1)), t(photo(), rng(1)), t(photo(), rng(2))
    assert a.size == (16, 16) and a.mode == "RGB"
    assert np.array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(a), pixels(c))


def test_random_resized_crop_box_respects_scale_and_ratio():
    t = RandomResizedCrop(8, scale=(0.25, 0.5), ratio=(0.5, 2.0))
    for seed in range(50):
        left, top, right, bottom = t.crop_box(200, 100, rng(seed))
        w, h = right - left, bottom - top
        assert 0 <= left < right <= 200 and 0 <= top < bottom <= 100
        assert 0.24 <= w * h / 20000 <= 0.51
        assert 0.45 <= w / h <= 2.1


def test_random_resized_crop_falls_back_to_a_center_crop():
    # A very wide image cannot fit any box of ratio <= 4/3 covering >= 90% of its area.
    t = RandomResizedCrop(4, scale=(0.9, 1.0))
    box = t.crop_box(400, 10, rng())
    assert box == ((400 - 13) // 2, 0, (400 - 13) // 2 + 13, 10)


def test_horizontal_flip():
    img = photo()
    flipped = RandomHorizontalFlip(prob=1.0)(img, rng())
    assert np.array_equal(pixels(flipped), pixels(img)[:, ::-1])
    assert RandomHorizontalFlip(prob=0.0)(img, rng()) is img


def test_resize_short_side_and_exact():
    assert Resize(15)(photo(40, 30), rng()).size == (20, 15)
    assert Resize(15)(photo(30, 40), rng()).size == (15, 20)
    assert Resize([10, 12])(photo(40, 30), rng()).size == (12, 10)


def test_center_crop_takes_the_middle():
    img = photo(40, 30)
    out = CenterCrop([10, 20])(img, rng())
    assert np.array_equal(pixels(out), pixels(img)[10:20, 10:30])


def test_resize_for_eval_is_resize_short_then_center_crop():
    img = photo(50, 40)
    out = ResizeForEval(32, crop_pct=0.875)(img, rng())
    short = int(32 / 0.875)  # 36
    expected = CenterCrop(32)(Resize(short)(img, rng()), rng())
    assert out.size == (32, 32)
    assert np.array_equal(pixels(out), pixels(expected))
    with pytest.raises(ConfigError):
        ResizeForEval(32, crop_pct=1.5)


def test_normalize_defaults_map_to_minus_one_one():
    img = Image.fromarray(np.array([[[0, 255, 51]]], dtype=np.uint8), "RGB")
    out = Normalize()(img, rng())
    assert out.dtype == np.float32 and out.shape == (3, 1, 1)
    np.testing.assert_allclose(out.ravel(), [-1.0, 1.0, 51 / 255 * 2 - 1], rtol=1e-6)
    imagenet = Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])(img, rng())
    np.testing.assert_allclose(imagenet[0, 0, 0], (0 - 0.485) / 0.229, rtol=1e-6)


def test_random_erasing_erases_a_box_and_leaves_the_input_alone():
    x = np.full((3, 32, 32), 5.0, dtype=np.float32)
    out = RandomErasing(prob=1.0, mode="const")(x, rng())
    erased = np.all(out == 0.0, axis=0)
    assert (x == 5.0).all()
    assert erased.any() and (out[:, ~erased] == 5.0).all()
    rows, cols = np.nonzero(erased)  # one rectangle
    assert erased[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
    assert 0.01 * 32 * 32 <= erased.sum() <= 0.4 * 32 * 32
    assert RandomErasing(prob=0.0)(x, rng()) is x


def test_random_erasing_pixel_mode_is_noise():
    x = np.zeros((3, 32, 32), dtype=np.float32)
    out = RandomErasing(prob=1.0, mode="pixel")(x, rng())
    changed = out[out != 0]
    assert changed.size > 10 and changed.std() > 0.5


def test_transform_order_errors_name_the_fix():
    pipeline = build_transforms([dict(name="Normalize"), dict(name="RandomResizedCrop", size=8)])
    with pytest.raises(ConfigError, match="before Normalize"):
        pipeline(photo(), rng())
    with pytest.raises(ConfigError, match="after Normalize"):
        RandomErasing(prob=1.0)(photo(), rng())


def test_build_transforms_rejects_unknown_keys_and_non_lists():
    with pytest.raises(ConfigError, match="probability"):
        build_transforms([dict(name="RandomHorizontalFlip", probability=0.5)])
    with pytest.raises(ConfigError):
        build_transforms(dict(name="Normalize"))
    assert build_transforms(None).transforms == []


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("magnitude", [0, 9, 30])
def test_every_randaugment_op_runs(op, magnitude):
    img = photo()
    out = RandAugment(num_ops=1, magnitude=magnitude, prob=1.0, ops=[op])(img, rng(magnitude))
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == img.size
    if magnitude == 9:  # a real magnitude changes the image whatever the op
        assert not np.array_equal(pixels(out), pixels(img))


def test_randaugment_is_reproducible_and_varies_with_the_generator():
    t = RandAugment(num_ops=2, magnitude=9, magnitude_std=0.5)
    outs = [pixels(t(photo(), rng(s))) for s in (3, 3, 4, 5, 6)]
    assert np.array_equal(outs[0], outs[1])
    assert any(not np.array_equal(outs[0], o) for o in outs[2:])


def test_randaugment_stronger_above_ten():
    # Rotation by 30 * m / 10 degrees: m=30 turns the image a quarter, m=10 only a third of that.
    img = photo(32, 32)
    quarter = RandAugment(num_ops=1, magnitude=30, prob=1.0, ops=["Rotate"])(img, rng())
    turned = [np.rot90(pixels(img), k) for k in (1, 3)]
    assert any(np.abs(pixels(quarter).astype(int) - t).mean() < 3 for t in turned)


def test_randaugment_rejects_bad_settings():
    with pytest.raises(ConfigError, match="magnitude"):
        RandAugment(magnitude=31)
    with pytest.raises(ConfigError, match="Accepted ops"):
        RandAugment(ops=["Rotate", "Twist"])
    with pytest.raises(ConfigError, match="bilinear"):
        RandAugment(interpolation="lanczos")


@pytest.mark.parametrize("cfg", [{"name": "RandomHorizontalFlip", "prob": 1.5},
                                 {"name": "RandomErasing", "prob": -0.1},
                                 {"name": "RandAugment", "prob": 2}])
def test_probabilities_outside_0_1_are_config_errors(cfg):
    from passl_mixer.data import build_transforms
    with pytest.raises(ConfigError, match=rf"{cfg['name']}: prob must be in \[0, 1\]"):
        build_transforms([cfg])
