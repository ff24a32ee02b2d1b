import numpy as np
import paddle
import pytest

from passl_mixer.data import Mixup
from passl_mixer.errors import ConfigError
from passl_mixer.schema import check_call

B, C, H, W, CLASSES = 6, 3, 10, 12, 8


def batch():
    """Image i is constant i + 1, so every pixel tells which image it came from."""
    values = np.arange(1, B + 1, dtype=np.float32).reshape(B, 1, 1, 1)
    images = paddle.to_tensor(np.broadcast_to(values, (B, C, H, W)).copy())
    labels = paddle.to_tensor(np.array([0, 1, 2, 3, 4, 5], dtype=np.int64))
    return images, labels


def rng(seed):
    return np.random.default_rng(seed)


def test_targets_are_distributions():
    images, labels = batch()
    mix = Mixup(CLASSES)
    for seed in range(20):
        out, targets = mix(images, labels, rng(seed))
        assert out.shape == images.shape and targets.shape == [B, CLASSES]
        assert targets.dtype == paddle.float32
        np.testing.assert_allclose(targets.numpy().sum(axis=1), 1.0, rtol=1e-5)
        assert (targets.numpy() >= 0).all()


@pytest.mark.parametrize("kwargs", [dict(prob=0.0), dict(mixup_alpha=0.0, cutmix_alpha=0.0)])
def test_off_gives_smoothed_one_hot(kwargs):
    images, labels = batch()
    out, targets = Mixup(CLASSES, label_smoothing=0.1, **kwargs)(images, labels, rng(0))
    assert np.array_equal(out.numpy(), images.numpy())
    expected = np.full((B, CLASSES), 0.1 / CLASSES, dtype=np.float32)
    expected[np.arange(B), labels.numpy()] = 1 - 0.1 + 0.1 / CLASSES
    np.testing.assert_allclose(targets.numpy(), expected, rtol=1e-6)


def test_mixup_blends_images_and_targets_with_the_same_lambda():
    images, labels = batch()
    mix = Mixup(CLASSES, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0)
    lam, use_cutmix = mix.sample_params(rng(3))  # what the call below will draw
    assert not use_cutmix and 0 < lam < 1
    out, targets = mix(images, labels, rng(3))
    x = images.numpy()
    np.testing.assert_allclose(out.numpy(), lam * x + (1 - lam) * x[::-1], rtol=1e-5)
    t = targets.numpy()
    y = labels.numpy()
    np.testing.assert_allclose(t[np.arange(B), y], lam, rtol=1e-5)
    np.testing.assert_allclose(t[np.arange(B), y[::-1]], 1 - lam, rtol=1e-5)


def test_cutmix_pastes_the_flipped_batch_and_corrects_lambda():
    images, labels = batch()
    x = images.numpy()
    mix = Mixup(CLASSES, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0)
    clipped_seen = False
    for seed in range(40):
        out, targets = mix(images, labels, rng(seed))
        out = out.numpy()
        pasted = out != x  # image i shows i + 1 except where image B-1-i was pasted
        for i in range(B):
            assert (out[i][pasted[i]] == x[B - 1 - i][pasted[i]]).all()
        area = pasted[0, 0]  # the same box in every image and channel
        assert (pasted == area).all()
        lam = 1 - area.sum() / (H * W)
        t = targets.numpy()
        np.testing.assert_allclose(t[0, labels.numpy()[0]], lam, rtol=1e-5, atol=1e-6)
        lam_drawn, _ = mix.sample_params(rng(seed))
        cut_h, cut_w = int(H * np.sqrt(1 - lam_drawn)), int(W * np.sqrt(1 - lam_drawn))
        clipped_seen |= area.sum() < (cut_h // 2 * 2) * (cut_w // 2 * 2)
    assert clipped_seen  # some boxes ran over the border, and lambda followed the clipped area


def test_inputs_are_not_modified_and_results_are_reproducible():
    images, labels = batch()
    before = images.numpy().copy()
    mix = Mixup(CLASSES, mixup_alpha=0.0, cutmix_alpha=1.0)
    a_img, a_t = mix(images, labels, rng(1))
    b_img, b_t = mix(images, labels, rng(1))
    assert np.array_equal(images.numpy(), before)
    assert np.array_equal(a_img.numpy(), b_img.numpy())
    assert np.array_equal(a_t.numpy(), b_t.numpy())


def test_switch_prob_chooses_between_mixup_and_cutmix():
    mix = Mixup(CLASSES, switch_prob=0.5)
    kinds = {mix.sample_params(rng(s))[1] for s in range(30)}
    assert kinds == {True, False}
    assert not any(Mixup(CLASSES, switch_prob=0.0).sample_params(rng(s))[1] for s in range(30))


@pytest.mark.parametrize("key, value, expected", [
    ("mode", "elem", "data.mixup.mode.*'batch'"),
    ("mixup_alpha", -1, "data.mixup.mixup_alpha is -1.*greater than or equal to 0"),
    ("label_smoothing", 1.0, "data.mixup.label_smoothing is 1.0.*less than 1"),
    ("prob", "often", "data.mixup.prob is 'often'"),
    ("mix_alpha", 0.2, "unknown key.*data.mixup.mix_alpha.*mixup_alpha"),
])
def test_bad_settings_name_the_key(key, value, expected):
    """data.mixup is checked against Mixup's signature, as the trainer does before building it."""
    with pytest.raises(ConfigError, match=expected):
        check_call(Mixup, {key: value}, "data.mixup", injected=("num_classes",))


def test_mixup_without_a_class_count_says_why():
    with pytest.raises(ConfigError, match="classifier"):
        Mixup(None)
