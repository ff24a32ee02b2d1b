"""The shared backbone API, run over EVERY registered backbone: shapes of forward /
forward_features / forward_head / forward_intermediates, out_indices, activation recompute,
MACs (against an independent count of the matmuls actually run), input checks, repeatable init,
checkpoint facts (STATE_DICT, dims_from_state_dict), use in a classifier, and lazy building.

A registered backbone needs an entry in conftest.TINY_BACKBONES, or the test fails: a new
family cannot skip a feature. A family that multiplies outside nn.Linear / nn.Conv2D /
layers.token_linear (FNet's Fourier transforms) adds those MACs in EXTRA_MACS below, by formula.
"""
import math
import sys

import numpy as np
import paddle
import paddle.nn as nn
import pytest

import passl_mixer as pm
from conftest import TINY_BACKBONES
from passl_mixer.errors import ShapeError
from passl_mixer.models import layers
from passl_mixer.models.backbones.base import IsotropicBackbone

BATCH = 2
FAMILIES = sorted(pm.BACKBONES.keys())

# MACs per image a family computes outside nn.Linear, nn.Conv2D and layers.token_linear (which
# the hooks below count), by formula: name -> f(backbone, grid rows, grid cols).
EXTRA_MACS = {
    # the real part of the 2-D DFT over (S, C) per block: X [S, C] @ [C, 2C], then [S, 2S] @ the
    # [2S, C] result (see fnet.py)
    "FNet": lambda b, rows, cols: b.num_blocks * (rows * cols * b.hidden_dim * 2 * b.hidden_dim
                                                  + rows * cols * 2 * rows * cols * b.hidden_dim),
}


def build(name, **extra):
    assert name in TINY_BACKBONES, (
        f"the registered backbone {name} has no entry in tests/conftest.py TINY_BACKBONES: add a "
        f"tiny config (16x16 images, 2 blocks, 32 channels) so every shared test runs on it")
    return pm.build_backbone(dict(TINY_BACKBONES[name], **extra))


def images(backbone, seed=0, size=None):
    h, w = size or backbone.img_size
    rng = np.random.default_rng(seed)
    return paddle.to_tensor(rng.standard_normal((BATCH, backbone.in_channels, h, w))
                            .astype("float32"))


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=tol, atol=tol)


@pytest.fixture(params=FAMILIES)
def name(request):
    return request.param


def test_every_registered_backbone_has_a_tiny_config_and_the_skeleton(name):
    backbone = build(name)
    assert isinstance(backbone, IsotropicBackbone)
    assert type(backbone).STATE_DICT is not None
    assert backbone.num_features == TINY_BACKBONES[name]["hidden_dim"]


def test_forward_features_head_and_pooled_shapes(name):
    backbone = build(name)
    backbone.eval()
    x = images(backbone)
    c, s = backbone.num_features, backbone.num_tokens
    pooled = backbone(x)
    assert pooled.shape == [BATCH, c]
    tokens = backbone.forward_features(x)
    assert tokens.shape == [BATCH, s, c]
    close(backbone.forward_head(tokens), pooled)
    close(backbone.forward_head(tokens, pre_logits=True), pooled)
    assert np.isfinite(pooled.numpy()).all()


def test_forward_intermediates_and_out_indices(name):
    paddle.seed(0)
    backbone = build(name)
    backbone.eval()
    x = images(backbone)
    c, (rows, cols) = backbone.num_features, backbone.grid_size
    before = backbone(x)
    final, outs = backbone.forward_intermediates(x, [0, -1])
    close(final, backbone.forward_features(x))
    assert [o.shape for o in outs] == [[BATCH, rows * cols, c]] * 2
    nchw = backbone.forward_intermediates(x, 1, output_fmt="NCHW", intermediates_only=True)
    assert [o.shape for o in nchw] == [[BATCH, c, rows, cols]]
    # NCHW is the same last-block tokens laid out on the patch grid (row-major)
    close(nchw[0], outs[1].transpose([0, 2, 1]).reshape([BATCH, c, rows, cols]))
    close(backbone(x), before)  # forward is unchanged after asking for intermediates

    paddle.seed(0)
    dense = build(name, out_indices=[0, 1])
    dense.eval()
    got = dense(x)
    assert isinstance(got, tuple) and len(got) == 2
    for g, want in zip(got, backbone.forward_intermediates(x, [0, 1], intermediates_only=True)):
        close(g, want)


def test_input_size_rules(name):
    backbone = build(name)
    backbone.eval()
    bad = paddle.zeros([BATCH, 1, *backbone.img_size])
    with pytest.raises(ShapeError, match=r"got \[2, 1, 16, 16\]"):
        backbone(bad)
    p = backbone.patch_size
    other = (backbone.img_size[0] + 2 * p, backbone.img_size[1] + p)
    x = images(backbone, size=other)
    if backbone.dynamic_grid:  # any grid of whole patches
        assert backbone(x).shape == [BATCH, backbone.num_features]
        nchw = backbone.forward_intermediates(x, 1, output_fmt="NCHW", intermediates_only=True)
        assert nchw[0].shape == [BATCH, backbone.num_features, other[0] // p, other[1] // p]
    else:
        with pytest.raises(ShapeError, match=type(backbone).TOKEN_MIXER):
            backbone(x)
    with pytest.raises(ShapeError, match="not a multiple of the patch size"):
        backbone(images(backbone, size=(other[0] + 1, other[1])))


def test_grad_checkpointing_gives_the_same_loss_and_gradients(name):
    paddle.seed(1)
    backbone = build(name)
    backbone.train()
    x = images(backbone, seed=1)

    def loss_and_grads(recompute):
        backbone.set_grad_checkpointing(recompute)
        backbone.clear_gradients()
        loss = (backbone(x) ** 2).mean()
        loss.backward()
        return float(loss), {k: p.grad.numpy().copy() for k, p in backbone.named_parameters()}

    plain_loss, plain = loss_and_grads(False)
    rec_loss, rec = loss_and_grads(True)
    assert backbone.use_recompute
    assert rec_loss == pytest.approx(plain_loss, rel=1e-6)
    assert plain.keys() == rec.keys()
    for k in plain:
        np.testing.assert_allclose(rec[k], plain[k], rtol=1e-5, atol=1e-7, err_msg=k)


def counted_macs(backbone, x, monkeypatch):
    """MACs per image of one forward, counted from the matmuls actually run: every nn.Linear
    and nn.Conv2D call (forward hooks) and every layers.token_linear call (patched where the
    model code looks it up). TokenLinear's forward is token_linear, counted there."""
    total = [0]

    def linear_hook(layer, inputs, output):
        total[0] += int(np.prod(output.shape)) * layer.weight.shape[0]  # [..., out] x in

    def conv_hook(layer, inputs, output):
        k = layer.weight.shape  # [out, in / groups, kh, kw]
        total[0] += int(np.prod(output.shape)) * k[1] * k[2] * k[3]

    original = layers.token_linear

    def counting_token_linear(fc, tokens, **kwargs):
        y = original(fc, tokens, **kwargs)
        total[0] += int(np.prod(y.shape)) * fc.weight.shape[0]  # [B, S_out, C] x S_in
        return y

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("passl_mixer.models") and \
                getattr(module, "token_linear", None) is original:
            monkeypatch.setattr(module, "token_linear", counting_token_linear)
    handles = []
    for layer in backbone.sublayers():
        if isinstance(layer, nn.Conv2D):
            handles.append(layer.register_forward_post_hook(conv_hook))
        elif isinstance(layer, nn.Linear) and not isinstance(layer, layers.TokenLinear):
            handles.append(layer.register_forward_post_hook(linear_hook))
    with paddle.no_grad():
        backbone(x)
    for h in handles:
        h.remove()
    return total[0] // x.shape[0]


def test_macs_equal_the_matmuls_actually_run(name, monkeypatch):
    backbone = build(name)
    backbone.eval()
    p, c = backbone.patch_size, backbone.num_features
    stem = backbone.num_tokens * c * backbone.in_channels * p * p
    per_block = [int(b.macs()) for b in backbone.blocks]
    assert backbone.macs() > 0 and all(m > 0 for m in per_block)
    assert backbone.macs() == stem + sum(per_block)
    rows, cols = backbone.grid_size
    extra = EXTRA_MACS.get(name, lambda b, r, c: 0)(backbone, rows, cols)
    assert counted_macs(backbone, images(backbone), monkeypatch) + extra == backbone.macs()


def test_init_is_repeatable_under_paddle_seed(name):
    def weights(seed):
        paddle.seed(seed)
        return {k: v.numpy() for k, v in build(name).state_dict().items()}
    a, b, other = weights(7), weights(7), weights(8)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert any(not np.array_equal(a[k], other[k]) for k in a)


def test_state_dict_round_trips_through_dims_from_state_dict(name):
    cls = pm.BACKBONES.get(name)
    backbone = build(name)
    weights = {k: v.numpy() for k, v in backbone.state_dict().items()}
    assert cls.STATE_DICT.marker in weights
    for param in cls.STATE_DICT.token_params:
        assert any(param.matches(k) for k in weights), param.pattern
    dims = cls.dims_from_state_dict(weights, "the tiny state dict")
    tiny = TINY_BACKBONES[name]
    assert set(cls.DIM_KEYS) <= set(dims)
    # every dimension read back is the one the model was built with (the family's own too)
    assert {k: v for k, v in dims.items() if k in tiny} == \
        {k: tiny[k] for k in dims if k in tiny}
    assert dims["in_channels"] == backbone.in_channels
    assert dims["num_tokens"] == backbone.num_tokens
    # the dims rebuild a model the weights load into exactly
    rebuilt = cls(**{k: v for k, v in dims.items() if k != "num_tokens"},
                  img_size=tiny["img_size"])
    rebuilt.set_state_dict({k: paddle.to_tensor(v) for k, v in weights.items()})
    for k, v in rebuilt.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), weights[k], err_msg=k)
    for arch, arch_dims in cls.ARCHS.items():
        assert cls.arch_of(arch_dims) == arch


def test_builds_into_a_classifier_that_gives_a_loss(name):
    backbone = dict(TINY_BACKBONES[name])
    model = pm.build_model({"name": "ImageClassifier", "backbone": backbone,
                            "head": {"name": "LinearClsHead", "num_classes": 5,
                                     "in_channels": backbone["hidden_dim"]}})
    model.train()
    x = images(model.backbone)
    out = model(x, paddle.to_tensor([1, 3], dtype="int64"))
    assert math.isfinite(float(out["loss"]))
    out["loss"].backward()
    assert model.backbone.stem.proj.weight.grad is not None
    model.eval()
    assert model(x).shape == [BATCH, 5]


def test_builds_under_lazy_guard(name):
    with paddle.LazyGuard():  # shapes only, as tools/model_info.py builds
        lazy = build(name)
    built = build(name)
    assert [(k, v.shape) for k, v in lazy.state_dict().items()] == \
        [(k, v.shape) for k, v in built.state_dict().items()]
    assert lazy.macs() == built.macs()
