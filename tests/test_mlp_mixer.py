import math

import numpy as np
import paddle
import paddle.nn as nn
import pytest

import passl_mixer as pm
from passl_mixer.errors import ConfigError, ShapeError
from passl_mixer.models.backbones.base import linear_drop_path_rates
from passl_mixer.models.backbones.mlp_mixer import ARCHS
from passl_mixer.models.layers import TokenMixingMlp


def n_params(layer):
    return sum(int(np.prod(p.shape)) for p in layer.parameters())


def classifier(arch, num_classes=1000):
    return pm.build_model({"name": "ImageClassifier", "backbone": {"name": "MlpMixer", "arch": arch},
                           "head": {"name": "LinearClsHead", "num_classes": num_classes,
                                    "in_channels": ARCHS[arch]["hidden_dim"]}})


# The paper's Table 1 "Params (M)" column, which counts no classification head.
TABLE1_MILLIONS = {"s32": 19, "s16": 18, "b32": 60, "b16": 59, "l32": 206, "l16": 207, "h14": 431}


def test_parameter_counts_match_the_original_and_table1():
    for arch, millions in TABLE1_MILLIONS.items():
        # LazyGuard builds the same layers without allocating their weights (H/14 is 1.7 GB)
        with paddle.LazyGuard():
            model = classifier(arch)
        total, head = n_params(model), n_params(model.head)
        assert round((total - head) / 1e6) == millions, arch
        if arch == "b16":
            assert total == 59_880_472
        if arch == "l16":
            assert total == 208_196_168
    assert n_params(classifier("b16")) == 59_880_472  # and one fully built model


def count_macs_with_hooks(model, x):
    """Independent MAC count: hooks on every Linear and Conv2D see the real shapes. The token
    MLPs call their Linear weights directly (W^T x), so a hook on each token MLP counts them
    from its real input [B, S, C]."""
    total = [0]

    def linear_hook(layer, inputs, output):
        total[0] += int(np.prod(output.shape[:-1])) * layer.weight.shape[0] * layer.weight.shape[1]

    def token_mlp_hook(layer, inputs, output):
        batch, tokens, channels = inputs[0].shape
        assert layer.fc1.weight.shape[0] == tokens == output.shape[1]
        total[0] += batch * channels * 2 * layer.fc1.weight.shape[0] * layer.fc1.weight.shape[1]

    def conv_hook(layer, inputs, output):
        out_c, in_c, kh, kw = layer.weight.shape
        total[0] += int(np.prod(output.shape)) * in_c * kh * kw

    hooks = []
    for m in model.sublayers():
        if isinstance(m, TokenMixingMlp):
            hooks.append(m.register_forward_post_hook(token_mlp_hook))
        elif isinstance(m, nn.Linear):  # a token MLP's fc1/fc2 are never called: no double count
            hooks.append(m.register_forward_post_hook(linear_hook))
        elif isinstance(m, nn.Conv2D):
            hooks.append(m.register_forward_post_hook(conv_hook))
    model(x)
    for h in hooks:
        h.remove()
    return total[0] // x.shape[0]


def test_macs_equal_an_independent_count_and_b16_is_12_6_gmacs():
    m = pm.MlpMixer(patch_size=4, hidden_dim=24, num_blocks=3, tokens_mlp_dim=10,
                    channels_mlp_dim=40, img_size=[16, 24])
    m.eval()
    assert m.macs() == count_macs_with_hooks(m, paddle.randn([2, 3, 16, 24]))
    b16 = dict(ARCHS["b16"])
    s, c = (224 // 16) ** 2, b16["hidden_dim"]
    expected = s * c * 3 * 16 * 16 + 12 * (2 * c * s * 384 + 2 * s * c * 3072)
    with paddle.LazyGuard():
        assert pm.MlpMixer(arch="b16").macs() == expected
    assert abs(expected / 1e9 - 12.6) < 0.05


def test_forward_api_shapes(tiny_backbone_cfg):
    m = pm.build_backbone(tiny_backbone_cfg)
    x = paddle.randn([3, 3, 16, 16])
    assert m.forward_features(x).shape == [3, 16, 32]
    assert m(x).shape == [3, 32]
    np.testing.assert_allclose(m(x).numpy(), m.forward_features(x).mean(1).numpy(), atol=1e-6)
    assert m.num_features == 32 and m.num_tokens == 16


def test_out_indices_returns_chosen_block_outputs(tiny_backbone_cfg):
    tiny_backbone_cfg.update(num_blocks=3, out_indices=[0, -1])
    m = pm.build_backbone(tiny_backbone_cfg)
    m.eval()
    x = paddle.randn([2, 3, 16, 16])
    outs = m(x)
    assert isinstance(outs, tuple) and len(outs) == 2
    t = m.stem(x)
    t0 = m.blocks[0](t)
    np.testing.assert_allclose(outs[0].numpy(), t0.numpy(), atol=1e-6)
    np.testing.assert_allclose(outs[1].numpy(), m.blocks[2](m.blocks[1](t0)).numpy(), atol=1e-5)
    with pytest.raises(ConfigError, match="out_indices"):
        pm.build_backbone(dict(tiny_backbone_cfg, out_indices=[3]))


def test_block_computes_token_then_channel_mixing(tiny_backbone_cfg):
    m = pm.build_backbone(dict(tiny_backbone_cfg, gelu="exact"))
    m.eval()
    blk = m.blocks[0]
    x = paddle.randn([2, 16, 32])

    def ln(v, norm):
        mu = v.mean(-1, keepdims=True)
        var = ((v - mu) ** 2).mean(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + 1e-6) * norm.weight.numpy() + norm.bias.numpy()

    def mlp(v, mlp):
        h = v @ mlp.fc1.weight.numpy() + mlp.fc1.bias.numpy()
        h = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))
        return h @ mlp.fc2.weight.numpy() + mlp.fc2.bias.numpy()

    xn = x.numpy().astype(np.float64)
    y = xn + mlp(ln(xn, blk.norm1).transpose(0, 2, 1), blk.mlp_tokens).transpose(0, 2, 1)
    y = y + mlp(ln(y, blk.norm2), blk.mlp_channels)
    np.testing.assert_allclose(blk(x).numpy(), y, atol=1e-4)


def test_numerics_defaults_eps_and_tanh_gelu(tiny_backbone_cfg):
    m = pm.build_backbone(tiny_backbone_cfg)
    assert m.norm._epsilon == 1e-6 and m.blocks[0].norm1._epsilon == 1e-6
    act = m.blocks[0].mlp_channels.act
    x = paddle.linspace(-4, 4, 101)
    xn = x.numpy()
    tanh_form = 0.5 * xn * (1 + np.tanh(np.sqrt(2 / np.pi) * (xn + 0.044715 * xn ** 3)))
    np.testing.assert_allclose(act(x).numpy(), tanh_form, atol=1e-6)
    exact = pm.build_backbone(dict(tiny_backbone_cfg, gelu="exact")).blocks[0].mlp_channels.act
    assert np.abs(exact(x).numpy() - tanh_form).max() > 1e-4
    with pytest.raises(ConfigError, match="gelu"):
        pm.build_backbone(dict(tiny_backbone_cfg, gelu="relu"))


def test_stochastic_depth_grows_linearly(tiny_backbone_cfg):
    m = pm.build_backbone(dict(tiny_backbone_cfg, num_blocks=5, drop_path_rate=0.2))
    rates = [b.drop_path.p for b in m.blocks]
    np.testing.assert_allclose(rates, [0.0, 0.05, 0.1, 0.15, 0.2], atol=1e-12)
    assert linear_drop_path_rates(0.3, 1) == [0.0]


def test_drop_path_drops_whole_samples_and_keeps_expectation():
    paddle.seed(0)
    dp = pm.models.DropPath(0.25)
    x = paddle.ones([4000, 3, 2])
    y = dp(x).numpy()
    per_sample = y.reshape(4000, -1)
    assert np.all(np.isclose(per_sample, 0.0) | np.isclose(per_sample, 1 / 0.75))
    assert np.all(per_sample.min(1) == per_sample.max(1))  # all or nothing per sample
    assert abs(y.mean() - 1.0) < 0.05
    dp.eval()
    np.testing.assert_array_equal(dp(x).numpy(), x.numpy())


def test_dropout_is_active_in_training_only(tiny_backbone_cfg):
    m = pm.build_backbone(dict(tiny_backbone_cfg, drop_rate=0.5))
    x = paddle.randn([2, 3, 16, 16])
    m.train()
    assert not np.allclose(m(x).numpy(), m(x).numpy())
    m.eval()
    np.testing.assert_array_equal(m(x).numpy(), m(x).numpy())


def test_recompute_gives_the_same_gradients(tiny_backbone_cfg):
    paddle.seed(1)
    a = pm.build_backbone(tiny_backbone_cfg)
    b = pm.build_backbone(dict(tiny_backbone_cfg, use_recompute=True))
    b.set_state_dict(a.state_dict())
    x = paddle.randn([2, 3, 16, 16])
    for m in (a, b):
        m.train()
        (m(x) ** 2).sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_allclose(pa.grad.numpy(), pb.grad.numpy(), atol=1e-6, err_msg=name)


@pytest.mark.parametrize("shape,match", [
    ([2, 1, 16, 16], r"\[batch, 3, 16, 16\], got \[2, 1, 16, 16\].*channel count is 1"),
    ([2, 3, 18, 18], r"got \[2, 3, 18, 18\].*not a multiple of the patch size 4"),
    ([2, 3, 32, 32], r"got \[2, 3, 32, 32\].*built for 16 tokens"),
    ([3, 16, 16], r"got \[3, 16, 16\]"),
])
def test_wrong_input_shapes_raise_clear_errors(tiny_backbone_cfg, shape, match):
    m = pm.build_backbone(tiny_backbone_cfg)
    with pytest.raises(ShapeError, match=match):
        m(paddle.randn(shape))


def test_arch_and_explicit_dims():
    with paddle.LazyGuard():
        m = pm.MlpMixer(arch="s16", num_blocks=2, img_size=[32, 64], in_channels=1)
    assert (m.patch_size, m.hidden_dim, m.num_blocks, m.tokens_mlp_dim, m.channels_mlp_dim) == \
        (16, 512, 2, 256, 2048)
    assert m.grid_size == (2, 4) and m.num_tokens == 8
    with pytest.raises(ConfigError, match="unknown arch 'x99'.*s32"):
        pm.MlpMixer(arch="x99")
    with pytest.raises(ConfigError, match="missing .*channels_mlp_dim"):
        pm.MlpMixer(patch_size=4, hidden_dim=8, num_blocks=1, tokens_mlp_dim=4)
    with pytest.raises(ConfigError, match="not a multiple of patch_size"):
        pm.MlpMixer(patch_size=4, hidden_dim=8, num_blocks=1, tokens_mlp_dim=4,
                    channels_mlp_dim=8, img_size=18)


@pytest.mark.parametrize("gelu", ["tanh", "exact"])
def test_token_mixing_equals_the_mlp_on_the_transposed_table(gelu):
    """W^T x (no transposes) computes Mlp(S) on x^T, in values and in every gradient."""
    from passl_mixer.models.layers import Mlp

    paddle.seed(0)
    token = TokenMixingMlp(7, 5, gelu=gelu)
    plain = Mlp(7, 5, gelu=gelu)
    plain.set_state_dict(token.state_dict())
    for p in token.parameters():  # non-zero biases, so their broadcast is checked too
        p.set_value(paddle.randn(p.shape))
    plain.set_state_dict(token.state_dict())
    x = paddle.randn([3, 7, 4])
    x.stop_gradient = False
    ours = token(x)
    ref = plain(x.transpose([0, 2, 1])).transpose([0, 2, 1])
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)
    grads = paddle.grad([(ours * ours).sum()], [x] + token.parameters())
    ref_grads = paddle.grad([(ref * ref).sum()], [x] + plain.parameters())
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g.numpy(), r.numpy(), rtol=1e-4, atol=1e-5)


def test_inference_form_is_the_same_function_and_is_switched_back(tiny_backbone_cfg):
    # The form inference programs are traced in (export, evaluation through Paddle Inference):
    # patch stem as a matmul, token mean as a product, token-mixing output bias left out. With
    # large token biases the bias-free form still gives the same features (the LayerNorms
    # remove a per-token constant); with out_indices (block outputs, no norm after) the bias
    # is kept; leaving the context restores the training form.
    from passl_mixer.models.backbones.base import inference_forms

    paddle.seed(0)
    model = pm.build_backbone(tiny_backbone_cfg)
    model.eval()
    for block in model.blocks:
        block.mlp_tokens.fc2.bias.set_value(paddle.randn(block.mlp_tokens.fc2.bias.shape) * 3)
    x = paddle.randn([3, 3, 16, 16])
    with paddle.no_grad():
        want = model(x).numpy()
        with inference_forms(model):
            assert model.stem.as_matmul and not model.blocks[0].mlp_tokens.output_bias
            got = model(x).numpy()
        assert not model.stem.as_matmul and model.blocks[0].mlp_tokens.output_bias
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert np.abs(model(x).numpy() - want).max() == 0

        blocks = pm.build_backbone({**tiny_backbone_cfg, "out_indices": [0]})
        blocks.eval()
        with inference_forms(blocks):
            assert blocks.blocks[0].mlp_tokens.output_bias  # no norm after: the bias stays
