"""FNet for images: the Fourier mixing as matrix products equals paddle.fft.fft2(...).real; the
block equals a NumPy re-implementation of the Keras example's FNetLayer; any grid of whole
patches runs, with the position embedding resampled bilinearly; export; recompute; MACs."""
import logging
import math
import os

import numpy as np
import paddle
import pytest

import passl_mixer as pm
from passl_mixer.checkpoints.weights import save_weights
from passl_mixer.errors import CheckpointError, ShapeError
from passl_mixer.export import export_model
from passl_mixer.inference import Predictor
from passl_mixer.models.backbones.fnet import FNet, FNetBlock, FourierMixing
from passl_mixer.models.init import init_weights

TINY = dict(name="FNet", patch_size=4, hidden_dim=16, num_blocks=2, mlp_dim=24, img_size=16)


def tiny(**changes):
    return pm.build_backbone(dict(TINY, **changes))


def randomise(layer, seed=0, scale=0.3):
    """Every parameter random (LayerNorm weights around 1), so no check passes by zeros/ones."""
    rng = np.random.default_rng(seed)
    for name, p in layer.named_parameters():
        value = rng.standard_normal(p.shape) * scale
        if name.endswith("norm1.weight") or name.endswith("norm2.weight"):
            value += 1.0
        p.set_value(value.astype("float32"))


def fft2_real(x):
    return paddle.fft.fft2(x.astype("complex64"), axes=(-2, -1)).real().numpy()


@pytest.mark.parametrize("s, c", [(16, 16), (49, 24), (15, 7), (1, 5), (196, 64), (9, 1)])
def test_fourier_matrix_products_equal_fft2_real(s, c):
    x = paddle.to_tensor(np.random.default_rng(s * 100 + c).standard_normal((3, s, c)),
                         dtype="float32")
    want = fft2_real(x)
    scale = np.abs(want).max()
    got = FourierMixing(s, c)(x).numpy()
    assert np.abs(got - want).max() <= 1e-5 * scale, (s, c)
    # a token count other than the built one (another grid) gets its own token matrix
    other = FourierMixing(s + 3, c)
    assert np.abs(other(x).numpy() - want).max() <= 1e-5 * scale
    assert s in other._token_dft_other and s + 3 not in other._token_dft_other
    # the 'fft' option runs paddle.fft.fft2 eagerly: the same numbers
    assert np.abs(FourierMixing(s, c, impl="fft")(x).numpy() - want).max() <= 1e-6 * scale


def keras_fnet_layer(x, blk):
    """The Keras example's FNetLayer in float64 NumPy (inference: dropout off)."""
    def layer_norm(v, norm):
        mu = v.mean(-1, keepdims=True)
        var = ((v - mu) ** 2).mean(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + 1e-6) * norm.weight.numpy() + norm.bias.numpy()

    def dense(v, fc):
        return v @ fc.weight.numpy().astype(np.float64) + fc.bias.numpy()

    gelu = np.vectorize(lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))))
    y = np.fft.fft2(x, axes=(-2, -1)).real           # real(fft2d(inputs as complex))
    y = layer_norm(y + x, blk.norm1)
    ffn = dense(gelu(dense(y, blk.mlp.fc1)), blk.mlp.fc2)
    return layer_norm(y + ffn, blk.norm2)


def test_block_equals_the_keras_example_layer():
    blk = FNetBlock(num_tokens=12, hidden_dim=10, mlp_dim=14)
    randomise(blk, seed=1)
    blk.eval()
    x = np.random.default_rng(2).standard_normal((2, 12, 10))
    got = blk(paddle.to_tensor(x, dtype="float32")).numpy()
    np.testing.assert_allclose(got, keras_fnet_layer(x, blk), atol=1e-4)


def test_defaults_follow_the_keras_example():
    m = pm.build_backbone({k: v for k, v in TINY.items() if k != "mlp_dim"})
    assert m.mlp_dim == 16 and m.blocks[0].mlp.fc1.weight.shape == [16, 16]
    assert m.blocks[0].norm1._epsilon == 1e-6 and m.blocks[0].norm2._epsilon == 1e-6
    assert isinstance(m.blocks[0].mlp.act, paddle.nn.GELU) and not m.blocks[0].mlp.act._approximate
    assert isinstance(m.norm, paddle.nn.Identity)  # post-norm blocks: no final norm
    # every block shares one set of DFT matrices
    assert all(b.fourier is m.blocks[0].fourier for b in m.blocks)
    rates = [b.drop_path.p for b in tiny(num_blocks=3, drop_path_rate=0.2).blocks]
    np.testing.assert_allclose(rates, [0.0, 0.1, 0.2], atol=1e-12)


def test_forward_is_stem_plus_position_embedding_then_blocks_then_mean():
    m = tiny()
    randomise(m, seed=3)
    m.eval()
    x = paddle.randn([2, 3, 16, 16])
    assert m.position_embedding((4, 4)) is m.pos_embed  # the built grid: used as it is
    t = m.stem(x) + m.pos_embed
    for blk in m.blocks:
        t = blk(t)
    np.testing.assert_allclose(m(x).numpy(), t.mean(1).numpy(), atol=1e-5)
    assert m(x).shape == [2, 16]


def bilinear_half_pixel(table, out_h, out_w):
    """NumPy bilinear resample of table [h, w, C] (half-pixel centres, edges clamped)."""
    h, w, _ = table.shape

    def weights(n_out, n_in):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    r0, r1, fr = weights(out_h, h)
    c0, c1, fc = weights(out_w, w)
    rows = table[r0] * (1 - fr)[:, None, None] + table[r1] * fr[:, None, None]
    return rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]


@pytest.mark.parametrize("size", [(24, 24), (16, 32), (8, 8), (12, 20)])
def test_other_grids_run_with_the_position_embedding_resampled(size, caplog):
    m = tiny()
    randomise(m, seed=4)
    m.eval()
    x = paddle.randn([2, 3, *size])
    grid = (size[0] // 4, size[1] // 4)
    table = m.pos_embed.numpy().reshape(4, 4, 16).astype(np.float64)
    want = bilinear_half_pixel(table, *grid).reshape(1, -1, 16)
    with caplog.at_level(logging.INFO, logger="passl_mixer"):
        got = m.position_embedding(grid).numpy()
        np.testing.assert_allclose(got, want, atol=1e-6)
        np.testing.assert_allclose(m.embed(x).numpy(), (m.stem(x).numpy() + want), atol=1e-5)
        out = m(x)
        m(x)
    assert out.shape == [2, 16]
    said = [r.getMessage() for r in caplog.records if "resampled" in r.getMessage()]
    assert len(said) == 1 and f"{grid[0]}x{grid[1]} differs from the built 4x4" in said[0]
    # the blocks see the whole new grid: tokens of the new count, mixed by its own DFT
    t = m.embed(x)
    for blk in m.blocks:
        t = blk(t)
    np.testing.assert_allclose(out.numpy(), t.mean(1).numpy(), atol=1e-5)
    feats = m.forward_intermediates(x, indices=[-1], output_fmt="NCHW", intermediates_only=True)
    assert feats[0].shape == [2, 16, *grid]


@pytest.mark.parametrize("shape, match", [
    ([2, 3, 18, 16], r"got \[2, 3, 18, 16\].*not a multiple of the patch size 4"),
    ([2, 1, 16, 16], r"channel count is 1"),
    ([3, 16, 16], r"got \[3, 16, 16\]"),
])
def test_inputs_that_are_not_whole_patches_are_shape_errors(shape, match):
    with pytest.raises(ShapeError, match=match):
        tiny()(paddle.randn(shape))


def test_state_dict_has_the_position_embedding_not_the_dft_matrices():
    m = tiny()
    keys = set(m.state_dict())
    assert FNet.STATE_DICT.marker in keys and m.state_dict()["pos_embed"].shape == [1, 16, 16]
    assert not [k for k in keys if "dft" in k or "fourier" in k]
    assert [k for k in keys if FNet.STATE_DICT.token_params[0].matches(k)] == ["pos_embed"]
    assert len(list(m.buffers())) == 2  # the shared token and channel matrices
    weights = {k: v.numpy() for k, v in m.state_dict().items()}
    assert FNet.dims_from_state_dict(weights) == dict(
        patch_size=4, in_channels=3, hidden_dim=16, num_blocks=2, mlp_dim=24, num_tokens=16)
    del weights["pos_embed"]
    with pytest.raises(CheckpointError, match="pos_embed"):
        FNet.dims_from_state_dict(weights)
    # a fresh model takes the state dict as it is (strictly: no missing DFT keys)
    other = tiny()
    missing, unexpected = other.set_state_dict(m.state_dict())
    assert not missing and not unexpected


def test_position_embedding_init_and_lazy_build():
    paddle.seed(0)
    m = FNet(patch_size=4, hidden_dim=64, num_blocks=1, img_size=32)
    pos = m.pos_embed.numpy()
    assert abs(pos.std() - 0.02) < 0.003 and np.abs(pos).max() <= 0.04 + 1e-7
    # re-initialising a model that holds the backbone redraws the position embedding too
    clf = pm.build_model({"name": "ImageClassifier", "backbone": dict(TINY),
                          "head": {"name": "LinearClsHead", "num_classes": 3, "in_channels": 16}})
    before = clf.backbone.pos_embed.numpy()
    init_weights(clf, "jax")
    after = clf.backbone.pos_embed.numpy()
    assert not np.allclose(before, after) and np.abs(after).max() <= 0.04 + 1e-7
    with paddle.LazyGuard():
        assert FNet(patch_size=16, hidden_dim=512, num_blocks=8).pos_embed.shape == [1, 196, 512]


def test_export_and_reload_give_the_same_outputs(tmp_path):
    model_cfg = {"name": "ImageClassifier", "backbone": dict(TINY),
                 "head": {"name": "LinearClsHead", "num_classes": 5, "in_channels": 16}}
    model = pm.build_model(model_cfg)
    randomise(model, seed=5)
    model.eval()
    weights = str(tmp_path / "w.pdparams")
    save_weights({k: v.numpy() for k, v in model.state_dict().items()}, weights)
    cfg = {"model": model_cfg, "export": {"preprocess": [{"name": "Resize", "size": [16, 16]},
                                                          {"name": "Normalize"}]}}
    out = str(tmp_path / "export")
    export_model(cfg, out, weights=weights)
    x = np.random.default_rng(6).standard_normal((3, 3, 16, 16)).astype("float32")
    want = model(paddle.to_tensor(x)).numpy()
    got = Predictor(out, quiet=True).run(x)
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_onnx_export_matches_paddle(tmp_path):
    """No complex ops: paddle2onnx converts FNet (opset 13) and export_model checks the ONNX
    model against Paddle with onnxruntime (it raises when they differ)."""
    pytest.importorskip("paddle2onnx")
    pytest.importorskip("onnxruntime")
    model_cfg = {"name": "ImageClassifier", "backbone": dict(TINY, fourier="fft"),
                 "head": {"name": "LinearClsHead", "num_classes": 5, "in_channels": 16}}
    model = pm.build_model(model_cfg)
    randomise(model, seed=8)
    weights = str(tmp_path / "w.pdparams")
    save_weights({k: v.numpy() for k, v in model.state_dict().items()}, weights)
    cfg = {"model": model_cfg, "export": {"preprocess": [{"name": "Resize", "size": [16, 16]},
                                                          {"name": "Normalize"}]}}
    info = export_model(cfg, str(tmp_path / "export"), weights=weights, fmt="onnx")
    assert info["onnx"]["onnxruntime_max_abs_diff"] <= 1e-5


def test_fft_option_traces_to_the_matrix_products(tmp_path):
    m = tiny(fourier="fft")
    randomise(m, seed=7)
    m.eval()
    x = paddle.randn([2, 3, 16, 16])
    eager = m(x).numpy()
    np.testing.assert_allclose(eager, tiny_with(m.state_dict())(x).numpy(), atol=1e-5)
    prefix = str(tmp_path / "fnet")
    paddle.jit.save(m, prefix, input_spec=[paddle.static.InputSpec([None, 3, 16, 16], "float32")])
    program = [f for f in os.listdir(tmp_path) if f.endswith((".json", ".pdmodel"))][0]
    with open(tmp_path / program, "rb") as f:
        assert b"fft" not in f.read()  # no complex ops in an exported FNet
    np.testing.assert_allclose(paddle.jit.load(prefix)(x).numpy(), eager, atol=1e-5)


def tiny_with(state):
    m = tiny()
    m.set_state_dict(state)
    m.eval()
    return m


def test_recompute_gives_the_same_gradients():
    paddle.seed(1)
    a = tiny(drop_path_rate=0.3, drop_rate=0.1)
    b = tiny(drop_path_rate=0.3, drop_rate=0.1, use_recompute=True)
    b.set_state_dict(a.state_dict())
    x = paddle.randn([2, 3, 16, 16])
    for m in (a, b):
        m.train()
        paddle.seed(9)
        (m(x) ** 2).sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_allclose(pa.grad.numpy(), pb.grad.numpy(), atol=1e-5, err_msg=name)


def test_out_indices_and_forward_intermediates():
    m = tiny(num_blocks=3, out_indices=[0, -1])
    m.eval()
    x = paddle.randn([2, 3, 16, 16])
    outs = m(x)
    t0 = m.blocks[0](m.embed(x))
    np.testing.assert_allclose(outs[0].numpy(), t0.numpy(), atol=1e-5)
    np.testing.assert_allclose(outs[1].numpy(), m.blocks[2](m.blocks[1](t0)).numpy(), atol=1e-5)
    final, inter = m.forward_intermediates(x, indices=2)
    assert len(inter) == 2 and inter[0].shape == [2, 16, 16]
    np.testing.assert_allclose(final.numpy(), inter[-1].numpy(), atol=1e-6)


def test_macs_equal_an_independent_count():
    m = FNet(patch_size=4, hidden_dim=12, num_blocks=3, mlp_dim=20, img_size=[16, 24])
    m.eval()
    total = [0]

    def linear_hook(layer, inputs, output):
        total[0] += int(np.prod(output.shape[:-1])) * layer.weight.shape[0] * layer.weight.shape[1]

    def conv_hook(layer, inputs, output):
        out_c, in_c, kh, kw = layer.weight.shape
        total[0] += int(np.prod(output.shape)) * in_c * kh * kw

    def fourier_hook(layer, inputs, output):
        # the two products actually run: [S, C] @ [C, 2C], then [S, 2S] @ [2S, C]
        _, s, c = inputs[0].shape
        total[0] += s * c * layer.channel_dft.shape[1] + layer.token_dft.shape[0] * 2 * s * c

    for sub in m.sublayers():
        hook = next((h for kind, h in ((paddle.nn.Linear, linear_hook),
                                        (paddle.nn.Conv2D, conv_hook),
                                        (FourierMixing, fourier_hook))
                     if isinstance(sub, kind)), None)
        if hook:
            sub.register_forward_post_hook(hook)
    m(paddle.randn([1, 3, 16, 24]))
    assert m.macs() == total[0]
    # the ImageNet config's size: 196 tokens x 512, 8 blocks, FFN 512
    s, c = 196, 512
    with paddle.LazyGuard():
        big = FNet(patch_size=16, hidden_dim=512, num_blocks=8)
    assert big.macs() == s * c * 3 * 256 + 8 * (2 * s * c * (s + c) + 2 * s * c * c)
