"""ResMLP against timm's definition (tests/timm_reference.py, float64 NumPy) and the official
deit code's facts: parameter counts, forward numerics, LayerScale init, checkpoint names."""
import math
import os
import re

import numpy as np
import paddle
import pytest

import passl_mixer as pm
import timm_reference as ref
from conftest import ROOT
from passl_mixer.errors import ShapeError
from passl_mixer.models.backbones.base import linear_drop_path_rates
from passl_mixer.models.backbones.resmlp import ARCHS, ResMLP, default_init_values
from passl_mixer.optim import build_optimizer, split_decay

TIMM_NAME = {"s12": "resmlp_12_224", "s24": "resmlp_24_224", "s36": "resmlp_36_224",
             "b24": "resmlp_big_24_224"}
# The numbers: timm's resmlp_*_224 with the 1000-class head.
TIMM_PARAMS = {"s12": 15_350_872, "s24": 30_020_680, "s36": 44_690_488, "b24": 129_138_280}
TINY = dict(name="ResMLP", patch_size=4, hidden_dim=16, num_blocks=3, channels_mlp_dim=64,
            img_size=16)


def n_params(layer):
    return sum(int(np.prod(p.shape)) for p in layer.parameters())


def classifier(arch, num_classes=1000):
    return pm.build_model({"name": "ImageClassifier", "backbone": {"name": "ResMLP", "arch": arch},
                           "head": {"name": "LinearClsHead", "num_classes": num_classes,
                                    "in_channels": ARCHS[arch]["hidden_dim"]}})


def rename(key):
    """A timm / official name through ResMLP.STATE_DICT.renames, in order."""
    for pattern, repl in ResMLP.STATE_DICT.renames:
        key = re.sub(pattern, repl, key)
    return key


def to_paddle(timm_state):
    """timm-named backbone weights -> ours: renames, Linear [out, in] -> [in, out]."""
    return {rename(k): (np.ascontiguousarray(np.transpose(v)) if np.ndim(v) == 2 else v)
            for k, v in timm_state.items() if not k.startswith("head.")}


def test_parameter_counts_equal_timm():
    for arch, expected in TIMM_PARAMS.items():
        with paddle.LazyGuard():
            model = classifier(arch)
        assert n_params(model) == expected, arch
        assert ref.num_params(ref.timm_resmlp_shapes(**ref.RESMLP_VARIANTS[TIMM_NAME[arch]])) \
            == expected, arch
    assert n_params(classifier("s12")) == TIMM_PARAMS["s12"]  # and one fully built model


def test_names_and_shapes_equal_timm_and_official_after_renames():
    with paddle.LazyGuard():
        ours = ResMLP(arch="s12")
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    timm = ref.timm_resmlp_shapes(**ref.RESMLP_VARIANTS["resmlp_12_224"], num_classes=0)
    mapped = {rename(k): (s[::-1] if len(s) == 2 else s) for k, s in timm.items()}
    assert mapped == shapes
    official = ref.timm_resmlp_to_official(ref.timm_resmlp_state_dict(
        0, patch_size=4, hidden_dim=8, num_blocks=2, img_size=8, num_classes=0))
    assert "blocks.0.attn.weight" in official and "blocks.0.gamma_1" in official
    renamed = {rename(k) for k in official}
    assert ResMLP.STATE_DICT.marker in renamed  # the family is told after renaming
    tiny = pm.build_backbone(dict(TINY, hidden_dim=8, num_blocks=2, img_size=8))
    assert renamed == set(tiny.state_dict())


def test_forward_equals_timm_reference():
    timm = ref.timm_resmlp_state_dict(np.random.default_rng(0), patch_size=4, hidden_dim=16,
                                      num_blocks=3, mlp_ratio=4, img_size=16, num_classes=0)
    model = pm.build_backbone(TINY)
    ours = to_paddle(timm)
    assert set(ours) == set(model.state_dict())
    model.set_state_dict({k: paddle.to_tensor(v.reshape(model.state_dict()[k].shape))
                          for k, v in ours.items()})
    model.eval()
    images = np.random.default_rng(1).normal(size=(2, 3, 16, 16)).astype(np.float32)
    pooled, _, tokens = ref.resmlp_forward(timm, images, patch_size=4, return_tokens=True)
    x = paddle.to_tensor(images)
    assert np.abs(model(x).numpy() - pooled).max() <= 1e-5  # tanh GELU: 8e-5
    assert np.abs(model.forward_features(x).numpy() - tokens).max() <= 1e-5


def test_layerscale_init_values_follow_the_official_code():
    expected = {"s12": 0.1, "s24": 1e-5, "s36": 1e-6, "b24": 1e-6}
    for arch, value in expected.items():
        with paddle.LazyGuard():
            m = ResMLP(arch=arch)
        assert m.init_values == value
        assert {blk.ls1.init_values for blk in m.blocks} == {value}
        assert {blk.ls2.init_values for blk in m.blocks} == {value}
    # without arch: by depth, as the official S12 / S24 / S36
    assert [default_init_values(n) for n in (2, 12, 13, 24, 36)] == [0.1, 0.1, 1e-5, 1e-5, 1e-6]
    m = pm.build_backbone(dict(TINY, num_blocks=13))
    assert np.all(m.blocks[5].ls2.gamma.numpy() == np.float32(1e-5))
    m = pm.build_backbone(dict(TINY, init_values=0.3))
    for blk in m.blocks:
        assert np.all(blk.ls1.gamma.numpy() == np.float32(0.3))
        assert np.all(blk.ls2.gamma.numpy() == np.float32(0.3))
    with paddle.LazyGuard():
        assert ResMLP(arch="s24", init_values=1e-4).init_values == 1e-4


def test_default_init_is_the_official_codes_and_jax_is_lecun():
    paddle.seed(0)
    m = pm.build_backbone(dict(TINY, hidden_dim=64, channels_mlp_dim=256, img_size=64))
    for blk in m.blocks:
        for fc in (blk.linear_tokens, blk.mlp_channels.fc1, blk.mlp_channels.fc2):
            w = fc.weight.numpy()
            assert abs(w.std() - 0.02 * 0.8796) < 0.002 and np.abs(w).max() <= 0.04 + 1e-7
            assert np.all(fc.bias.numpy() == 0)
        for aff in (blk.norm1, blk.norm2):
            assert np.all(aff.alpha.numpy() == 1) and np.all(aff.beta.numpy() == 0)
    assert np.all(m.norm.alpha.numpy() == 1) and np.all(m.norm.beta.numpy() == 0)
    j = pm.build_backbone(dict(TINY, hidden_dim=64, channels_mlp_dim=256, img_size=64,
                               init="jax"))
    w = j.blocks[0].mlp_channels.fc1.weight.numpy()
    assert abs(w.std() - math.sqrt(1 / 64)) < 0.05 * math.sqrt(1 / 64)
    assert np.all(j.blocks[0].linear_tokens.bias.numpy() == 0)
    assert np.all(j.blocks[0].ls1.gamma.numpy() == np.float32(0.1))


def test_stochastic_depth_grows_linearly():
    m = pm.build_backbone(dict(TINY, num_blocks=5, drop_path_rate=0.2))
    assert [blk.drop_path.p for blk in m.blocks] == linear_drop_path_rates(0.2, 5)
    assert m.blocks[0].drop_path.p == 0.0 and m.blocks[-1].drop_path.p == pytest.approx(0.2)


def test_recompute_gives_the_same_gradients():
    paddle.seed(1)
    a = pm.build_backbone(dict(TINY, drop_path_rate=0.3))
    b = pm.build_backbone(dict(TINY, drop_path_rate=0.3, use_recompute=True))
    b.set_state_dict(a.state_dict())
    x = paddle.randn([4, 3, 16, 16])
    for m in (a, b):
        m.train()
        paddle.seed(7)  # the same drop-path masks in both
        (m(x) ** 2).sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_allclose(pa.grad.numpy(), pb.grad.numpy(), atol=1e-6, err_msg=name)


def test_forward_intermediates_and_out_indices():
    m = pm.build_backbone(TINY)
    m.eval()
    x = paddle.randn([2, 3, 16, 16])
    final, outs = m.forward_intermediates(x, indices=[0, -1], norm=True, output_fmt="NCHW")
    assert [tuple(o.shape) for o in outs] == [(2, 16, 4, 4)] * 2
    np.testing.assert_allclose(final.numpy(), m.forward_features(x).numpy(), atol=1e-6)
    np.testing.assert_allclose(outs[1].numpy(),
                               final.numpy().transpose(0, 2, 1).reshape(2, 16, 4, 4), atol=1e-6)
    first = m.forward_intermediates(x, indices=1, intermediates_only=True)
    assert len(first) == 1 and tuple(first[0].shape) == (2, 16, 16)
    m2 = pm.build_backbone(dict(TINY, out_indices=[1, 2]))
    m2.set_state_dict(m.state_dict())
    m2.eval()
    got = m2(x)
    assert isinstance(got, tuple) and len(got) == 2
    np.testing.assert_allclose(got[1].numpy(), first[0].numpy(), atol=1e-6)


@pytest.mark.parametrize("shape,match", [
    ([2, 3, 32, 32], r"got \[2, 3, 32, 32\]\. The token-mixing linear layer was built for 16 "
                     r"tokens"),
    ([2, 1, 16, 16], r"channel count is 1"),
    ([2, 3, 18, 18], r"not a multiple of the patch size 4"),
])
def test_wrong_input_raises_a_shape_error(shape, match):
    m = pm.build_backbone(TINY)
    with pytest.raises(ShapeError, match=match):
        m(paddle.randn(shape))


def test_macs_equal_an_independent_count():
    with paddle.LazyGuard():
        m = ResMLP(arch="s12")
    s, c, d, p = 196, 384, 1536, 16
    per_block = c * s * s + s * c * d + s * d * c  # token linear, fc1, fc2
    assert m.macs() == s * c * 3 * p * p + 12 * per_block
    assert round(m.macs() / 1e9, 1) == 3.0  # the deit README's "3B" FLOPs for ResMLP-S12


def test_dims_and_arch_from_a_state_dict():
    for arch, name in TIMM_NAME.items():
        shapes = ref.timm_resmlp_shapes(**ref.RESMLP_VARIANTS[name], num_classes=0)
        weights = to_paddle({k: np.empty(s, np.float32) for k, s in shapes.items()})
        dims = ResMLP.dims_from_state_dict(weights)
        a = ARCHS[arch]
        assert dims == dict(patch_size=a["patch_size"], hidden_dim=a["hidden_dim"],
                            num_blocks=a["num_blocks"], channels_mlp_dim=a["channels_mlp_dim"],
                            in_channels=3, num_tokens=(224 // a["patch_size"]) ** 2)
        assert ResMLP.arch_of(dims) == arch


def test_lamb_step_and_weight_decay_groups():
    paddle.seed(0)
    model = pm.build_backbone(TINY)
    skip = []  # per-channel vectors, Affine's [1, 1, C] ones included, are never decayed
    decay, no_decay = split_decay(model, skip)
    names = {p.name: n for n, p in model.named_parameters()}
    assert all(p.ndim in (2, 4) for p in decay)
    assert {names[p.name] for p in no_decay} >= {"blocks.0.norm1.alpha", "norm.beta",
                                                 "blocks.0.ls1.gamma",
                                                 "blocks.0.linear_tokens.bias"}
    opt, _ = build_optimizer({"name": "Lamb", "lr": 0.1, "weight_decay": 0.2,
                              "no_weight_decay": skip}, None, model, 1, 1)
    assert isinstance(opt, paddle.optimizer.Lamb)
    before = {n: p.numpy().astype(np.float64) for n, p in model.named_parameters()}
    (model(paddle.randn([2, 3, 16, 16])) ** 2).sum().backward()
    grads = {n: p.grad.numpy().astype(np.float64) for n, p in model.named_parameters()}
    opt.step()

    def lamb(w, g, wd, b1=0.9, b2=0.999, eps=1e-6):  # LAMB's first step (You et al., 2019)
        m, v = (1 - b1) * g / (1 - b1), (1 - b2) * g * g / (1 - b2)  # bias-corrected moments
        r = m / (np.sqrt(v) + eps) + wd * w
        trust = np.linalg.norm(w) / np.linalg.norm(r) if wd else 1.0  # decayed params only
        return w - 0.1 * trust * r
    decayed = {names[p.name] for p in decay}
    assert "blocks.0.linear_tokens.weight" in decayed
    for n, p in model.named_parameters():
        want = lamb(before[n], grads[n], 0.2 if n in decayed else 0.0)
        np.testing.assert_allclose(p.numpy(), want, rtol=1e-4, atol=1e-6, err_msg=n)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_shipped_config_matches_its_arch_and_the_recipe(arch):
    cfg = pm.load_config(os.path.join(ROOT, "configs", "resmlp", f"resmlp_{arch}_224.yaml"))
    backbone, head = cfg["model"]["backbone"], cfg["model"]["head"]
    assert backbone["name"] == "ResMLP" and backbone["arch"] == arch
    assert head["in_channels"] == ARCHS[arch]["hidden_dim"] and head["num_classes"] == 1000
    assert cfg["optimizer"]["name"] == "Lamb" and cfg["optimizer"]["weight_decay"] == 0.2
    assert cfg["train"]["epochs"] == 400 and cfg["lr_scheduler"]["warmup_epochs"] == 5
    assert cfg["data"]["mixup"]["mixup_alpha"] == 0.8 and cfg["data"]["mixup"]["cutmix_alpha"] == 1.0
    assert cfg["data"]["val"]["transforms"][0]["crop_pct"] == 0.9
