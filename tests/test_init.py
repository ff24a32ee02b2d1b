"""Initialisation statistics, checked on a real (mid-sized) Mixer and its head."""
import math

import numpy as np
import paddle
import pytest

import passl_mixer as pm
from passl_mixer.errors import ConfigError

CFG = dict(name="MlpMixer", patch_size=8, hidden_dim=256, num_blocks=2, tokens_mlp_dim=128,
           channels_mlp_dim=1024, img_size=64)


def build(scheme):
    paddle.seed(0)
    return pm.build_model({"name": "ImageClassifier", "backbone": dict(CFG, init=scheme),
                           "head": {"name": "LinearClsHead", "num_classes": 100,
                                    "in_channels": 256}})


def test_default_scheme_statistics():
    model = build("default")
    bb = model.backbone
    for blk in bb.blocks:
        for mlp in (blk.mlp_tokens, blk.mlp_channels):
            for fc in (mlp.fc1, mlp.fc2):
                w = fc.weight.numpy()
                limit = math.sqrt(6 / (w.shape[0] + w.shape[1]))
                assert np.abs(w).max() <= limit
                assert abs(w.std() - limit / math.sqrt(3)) < 0.03 * limit  # uniform(-l, l)
                b = fc.bias.numpy()
                assert 0 < b.std() < 3e-6 and np.abs(b).max() < 1e-5   # normal(std 1e-6)
        for norm in (blk.norm1, blk.norm2):
            assert np.all(norm.weight.numpy() == 1) and np.all(norm.bias.numpy() == 0)
    stem = bb.stem.proj.weight.numpy()
    assert abs(stem.std() - 0.02 * 0.8796) < 0.002  # std of a normal cut at 2 std
    assert np.abs(stem).max() <= 0.04 + 1e-7
    assert np.all(bb.stem.proj.bias.numpy() == 0)
    assert np.all(bb.norm.weight.numpy() == 1) and np.all(bb.norm.bias.numpy() == 0)
    assert np.all(model.head.fc.weight.numpy() == 0) and np.all(model.head.fc.bias.numpy() == 0)


def test_jax_scheme_is_lecun_normal_with_zero_biases():
    model = build("jax")
    bb = model.backbone
    kernels = [(bb.stem.proj.weight, 3 * 8 * 8)]
    for blk in bb.blocks:
        for mlp in (blk.mlp_tokens, blk.mlp_channels):
            for fc in (mlp.fc1, mlp.fc2):
                kernels.append((fc.weight, fc.weight.shape[0]))
                assert np.all(fc.bias.numpy() == 0)
    for w, fan_in in kernels:
        w = w.numpy()
        std = math.sqrt(1 / fan_in)
        assert abs(w.std() - std) < 0.05 * std, (w.shape, w.std(), std)
        assert np.abs(w).max() <= 2 * std / 0.8796 + 1e-6
    assert np.all(bb.stem.proj.bias.numpy() == 0)
    assert np.all(model.head.fc.weight.numpy() == 0)


def test_init_follows_paddle_seed_and_rejects_unknown_scheme():
    a, b = build("default"), build("default")
    np.testing.assert_array_equal(a.backbone.stem.proj.weight.numpy(),
                                  b.backbone.stem.proj.weight.numpy())
    with pytest.raises(ConfigError, match="Unknown init scheme 'xavier'"):
        pm.build_backbone(dict(CFG, init="xavier"))
