"""gMLP backbone: timm's parameter counts and forward, the paper's gate initialisation, the
skeleton's services (stochastic depth, recompute, intermediates, shape errors, MACs)."""
import numpy as np
import paddle
import paddle.nn as nn
import pytest

import passl_mixer as pm
import timm_reference
from passl_mixer.errors import CheckpointError, ConfigError, ShapeError
from passl_mixer.models.backbones.gmlp import ARCHS, GMLP
from passl_mixer.models.layers import TokenLinear

# A gMLP small enough for milliseconds per pass: 4x6 = 24 tokens (a non-square grid, so the
# token order matters), D = 6 C as in the paper.
TINY = dict(name="GMLP", patch_size=4, hidden_dim=16, num_blocks=3, channels_mlp_dim=96,
            img_size=[16, 24])
TIMM_COUNTS = {"ti16": ("gmlp_ti16_224", 5_867_328), "s16": ("gmlp_s16_224", 19_422_656),
               "b16": ("gmlp_b16_224", 73_075_392)}


def n_params(layer):
    return sum(int(np.prod(p.shape)) for p in layer.parameters())


def tiny(**kw):
    return pm.build_backbone(dict(TINY, **kw))


@pytest.mark.parametrize("arch", sorted(TIMM_COUNTS))
def test_parameter_counts_equal_timm_with_a_1000_class_head(arch):
    timm_name, expected = TIMM_COUNTS[arch]
    assert timm_reference.num_params(
        timm_reference.timm_gmlp_shapes(**timm_reference.GMLP_VARIANTS[timm_name])) == expected
    with paddle.LazyGuard():
        model = pm.build_model({"name": "ImageClassifier",
                                "backbone": {"name": "GMLP", "arch": arch},
                                "head": {"name": "LinearClsHead", "num_classes": 1000,
                                         "in_channels": ARCHS[arch]["hidden_dim"]}})
    assert n_params(model) == expected
    assert ARCHS[arch]["channels_mlp_dim"] == 6 * ARCHS[arch]["hidden_dim"]


def load_timm_state(model, state):
    """Copy a timm-named state dict into ``model``: the names are the same, 2-D Linear weights
    (including the gate's token projection) go from PyTorch's [out, in] to Paddle's [in, out]."""
    ours = model.state_dict()
    assert sorted(ours) == sorted(state)
    for name, value in state.items():
        value = value.T if value.ndim == 2 else value
        assert list(ours[name].shape) == list(value.shape), name
        ours[name].set_value(paddle.to_tensor(np.ascontiguousarray(value), dtype="float32"))


def test_forward_equals_timm_reference_on_the_same_weights():
    model = tiny()
    model.eval()
    state = timm_reference.timm_gmlp_state_dict(0, patch_size=4, hidden_dim=16, num_blocks=3,
                                                mlp_ratio=6, img_size=(16, 24), num_classes=0)
    load_timm_state(model, state)
    images = np.random.default_rng(1).normal(size=(2, 3, 16, 24))
    pooled, _, tokens = timm_reference.gmlp_forward(state, images, patch_size=4,
                                                    return_tokens=True)
    x = paddle.to_tensor(images, dtype="float32")
    assert np.abs(model(x).numpy() - pooled).max() <= 1e-4
    assert np.abs(model.forward_features(x).numpy() - tokens).max() <= 1e-4
    # the comparison sees the GELU form: tanh matches the tanh reference, not the exact one
    tanh_model = tiny(gelu="tanh")
    tanh_model.eval()
    load_timm_state(tanh_model, state)
    tanh_tokens = tanh_model.forward_features(x).numpy()
    _, _, tanh_ref = timm_reference.gmlp_forward(state, images, patch_size=4, gelu="tanh",
                                                 return_tokens=True)
    assert np.abs(tanh_tokens - tanh_ref).max() <= 1e-4 < np.abs(tanh_tokens - tokens).max()


@pytest.mark.parametrize("init", ["default", "jax"])
def test_initialisation_gate_near_identity_norms_one_zero_and_eps(init):
    paddle.seed(0)
    m = pm.build_backbone(dict(TINY, img_size=64, init=init))  # 256 tokens: 65536 gate weights
    for blk in m.blocks:
        gate = blk.mlp_channels.gate
        w = gate.proj.weight.numpy()
        assert w.shape == (256, 256)
        assert 0.9e-6 < w.std() < 1.1e-6 and abs(w.mean()) < 1e-7
        np.testing.assert_array_equal(gate.proj.bias.numpy(), 1.0)
        for norm in (blk.norm, gate.norm):
            np.testing.assert_array_equal(norm.weight.numpy(), 1.0)
            np.testing.assert_array_equal(norm.bias.numpy(), 0.0)
        assert blk.norm._epsilon == 1e-6 and gate.norm._epsilon == 1e-5
        fc1 = blk.mlp_channels.fc1.weight.numpy()
        if init == "default":  # xavier-uniform [C, D]
            assert np.abs(fc1).max() <= np.sqrt(6 / (16 + 96)) and fc1.std() > 0.05
            assert 0 < np.abs(blk.mlp_channels.fc1.bias.numpy()).max() < 1e-5
        else:
            np.testing.assert_array_equal(blk.mlp_channels.fc1.bias.numpy(), 0.0)
    assert m.norm._epsilon == 1e-6
    np.testing.assert_array_equal(m.norm.weight.numpy(), 1.0)
    custom = tiny(norm_eps=1e-5, gate_norm_eps=1e-6)
    assert custom.norm._epsilon == custom.blocks[0].norm._epsilon == 1e-5
    assert custom.blocks[0].mlp_channels.gate.norm._epsilon == 1e-6


def test_gate_at_initialisation_passes_u_through():
    """The paper: W near zero and b = 1 make f(Z) ~ 1, so s(Z) = u * f(v) ~ u at the start."""
    m = tiny()
    gate = m.blocks[0].mlp_channels.gate
    z = paddle.randn([2, 24, 96])
    np.testing.assert_allclose(gate(z).numpy(), z[..., :48].numpy(), atol=1e-4)


def test_stochastic_depth_rises_linearly():
    m = tiny(num_blocks=5, drop_path_rate=0.2)
    np.testing.assert_allclose([b.drop_path.p for b in m.blocks], [0, 0.05, 0.1, 0.15, 0.2],
                               atol=1e-12)
    m.train()
    x = paddle.randn([2, 3, 16, 24])
    assert not np.allclose(m(x).numpy(), m(x).numpy())
    m.eval()
    np.testing.assert_array_equal(m(x).numpy(), m(x).numpy())


def test_recompute_gives_the_same_gradients():
    paddle.seed(1)
    a = tiny()
    b = tiny(use_recompute=True)
    for p in a.parameters():  # a non-trivial gate, so its gradients are exercised
        p.set_value(paddle.randn(p.shape) * 0.3)
    b.set_state_dict(a.state_dict())
    x = paddle.randn([2, 3, 16, 24])
    for m in (a, b):
        m.train()
        (m(x) ** 2).sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_allclose(pa.grad.numpy(), pb.grad.numpy(), atol=1e-5, err_msg=name)


def test_forward_intermediates_and_out_indices():
    m = tiny()
    m.eval()
    x = paddle.randn([2, 3, 16, 24])
    t = m.stem(x)
    outs_manual = []
    for blk in m.blocks:
        t = blk(t)
        outs_manual.append(t.numpy())
    final, outs = m.forward_intermediates(x, indices=[0, -1])
    np.testing.assert_allclose(outs[0].numpy(), outs_manual[0], atol=1e-5)
    np.testing.assert_allclose(outs[1].numpy(), outs_manual[2], atol=1e-5)
    np.testing.assert_allclose(final.numpy(), m.forward_features(x).numpy(), atol=1e-5)
    nchw = m.forward_intermediates(x, indices=1, output_fmt="NCHW", intermediates_only=True)
    assert len(nchw) == 1 and nchw[0].shape == [2, 16, 4, 6]
    np.testing.assert_allclose(nchw[0].numpy().reshape(2, 16, 24).transpose(0, 2, 1),
                               outs_manual[2], atol=1e-5)
    with_out = tiny(out_indices=[1])
    with_out.set_state_dict(m.state_dict())
    with_out.eval()
    (only,) = with_out(x)
    np.testing.assert_allclose(only.numpy(), outs_manual[1], atol=1e-5)


def test_wrong_input_size_names_the_spatial_gating_unit():
    m = tiny()
    with pytest.raises(ShapeError, match=r"got \[1, 3, 16, 16\]. The spatial gating unit was "
                                         r"built for 24 tokens"):
        m(paddle.randn([1, 3, 16, 16]))


def count_macs_with_hooks(model, x):
    """Independent count from the real shapes: a Linear over channels costs rows * in * out;
    the gate's token projection (a TokenLinear, called on [B, S, c]) costs B * c * S_in * S_out."""
    total = [0]

    def hook(layer, inputs, output):
        if isinstance(layer, TokenLinear):
            b, s_in, c = inputs[0].shape
            total[0] += b * c * s_in * output.shape[1]
        elif isinstance(layer, nn.Linear):
            total[0] += int(np.prod(output.shape[:-1])) * inputs[0].shape[-1] * output.shape[-1]
        else:  # Conv2D
            out_c, in_c, kh, kw = layer.weight.shape
            total[0] += int(np.prod(output.shape)) * in_c * kh * kw

    hooks = [m.register_forward_post_hook(hook) for m in model.sublayers()
             if isinstance(m, (nn.Linear, nn.Conv2D))]
    model(x)
    for h in hooks:
        h.remove()
    return total[0] // x.shape[0]


def test_macs_equal_an_independent_count():
    m = tiny()
    m.eval()
    assert m.macs() == count_macs_with_hooks(m, paddle.randn([2, 3, 16, 24]))
    s, c, d = 196, 128, 768
    with paddle.LazyGuard():
        assert GMLP(arch="ti16").macs() == s * c * 3 * 256 + 30 * (s * c * d + s * s * d // 2
                                                                    + s * d // 2 * c)
        b16 = GMLP(arch="b16").macs()
    # the paper lists gMLP-B at 31.6 GFLOPs (2 FLOPs per multiply-add; norms etc. are the rest)
    assert abs(2 * b16 / 1e9 - 31.6) < 0.2


def test_arch_explicit_dims_and_errors():
    with paddle.LazyGuard():
        m = GMLP(arch="S16", num_blocks=2, img_size=[32, 64])
    assert (m.patch_size, m.hidden_dim, m.num_blocks, m.channels_mlp_dim) == (16, 256, 2, 1536)
    assert m.num_tokens == 8 and m.blocks[0].mlp_channels.gate.proj.weight.shape == [8, 8]
    with pytest.raises(ConfigError, match="unknown arch 'x99'.*ti16"):
        GMLP(arch="x99")
    with pytest.raises(ConfigError, match="missing channels_mlp_dim"):
        GMLP(patch_size=4, hidden_dim=8, num_blocks=1)
    with pytest.raises(ConfigError, match="channels_mlp_dim 15 is odd"):
        GMLP(patch_size=4, hidden_dim=8, num_blocks=1, channels_mlp_dim=15, img_size=8)
    with pytest.raises(ConfigError, match="gelu"):
        pm.build_backbone(dict(TINY, gelu="relu"))


def test_checkpoint_facts_read_the_dimensions_back():
    m = tiny()
    weights = {k: v.numpy() for k, v in m.state_dict().items()}
    dims = GMLP.dims_from_state_dict(weights)
    assert dims == dict(patch_size=4, in_channels=3, hidden_dim=16, num_blocks=3,
                        channels_mlp_dim=96, num_tokens=24)
    assert GMLP.STATE_DICT.marker in weights
    token_keys = [k for k in weights if any(t.matches(k) for t in GMLP.STATE_DICT.token_params)]
    assert len(token_keys) == 2 * 3 and all(".gate.proj." in k for k in token_keys)
    assert GMLP.arch_of(dict(ARCHS["b16"])) == "b16" and GMLP.arch_of(dims) is None
    weights["blocks.0.mlp_channels.gate.proj.weight"] = np.zeros((24, 12))
    with pytest.raises(CheckpointError, match=r"gate.proj.weight has shape \[24, 12\]"):
        GMLP.dims_from_state_dict(weights)
