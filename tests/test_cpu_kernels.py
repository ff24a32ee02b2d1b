"""The fused CPU training kernels (passl_mixer/cpu_kernels.cc): built here from source with the
machine's compiler, they must give Paddle's own results and gradients, be used only where they
apply, and leave every other path (evaluation, tracing, export) exactly Paddle's ops. Their
speed is measured by ``tools/benchmark.py --mode train``, not here."""
import os
import subprocess
import sys

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import passl_mixer as pm
from conftest import TINY_BACKBONES
from passl_mixer import cpu_kernels
from passl_mixer.models import layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def ops():
    built = cpu_kernels.ops()
    assert built is not None, f"the kernels did not build here: {cpu_kernels._failed}"
    return built


def _grads(fn, inputs, upstream):
    for t in inputs:
        t.stop_gradient = False
        t.clear_gradient()
    out = fn(*inputs)
    return [out.numpy()] + [g.numpy() for g in paddle.grad([out], inputs, [upstream])]


def _close(got, want, rtol):
    for g, w in zip(got, want):
        scale = np.abs(w).max() + 1e-12
        assert np.abs(g - w).max() <= rtol * scale, (np.abs(g - w).max(), scale)


@pytest.mark.parametrize("approximate", [True, False])
@pytest.mark.parametrize("bias_axis", [-1, -2])
def test_bias_gelu_equals_paddle(ops, approximate, bias_axis):
    rng = np.random.default_rng(0)
    h = paddle.to_tensor(rng.standard_normal((3, 5, 7)).astype("float32") * 3)
    bias = paddle.to_tensor(rng.standard_normal(7 if bias_axis == -1 else 5).astype("float32"))
    up = paddle.to_tensor(rng.standard_normal((3, 5, 7)).astype("float32"))
    ours = _grads(lambda h, b: ops.mixer_bias_gelu(h, b, approximate, bias_axis, 2)[0], [h, bias],
                  up)
    broadcast = (lambda b: b) if bias_axis == -1 else (lambda b: b.unsqueeze(-1))
    want = _grads(lambda h, b: F.gelu(h + broadcast(b), approximate=approximate), [h, bias], up)
    _close(ours, want, 1e-5)


@pytest.mark.parametrize("shape", [(6, 16), (2, 9, 33)])
def test_layer_norm_equals_paddle(ops, shape):
    rng = np.random.default_rng(1)
    x = paddle.to_tensor(rng.standard_normal(shape).astype("float32") * 4 + 10)  # a large mean
    w = paddle.to_tensor(rng.uniform(0.5, 1.5, shape[-1]).astype("float32"))
    b = paddle.to_tensor(rng.standard_normal(shape[-1]).astype("float32"))
    up = paddle.to_tensor(rng.standard_normal(shape).astype("float32"))
    ours = _grads(lambda x, w, b: cpu_kernels.layer_norm(x, w, b, 1e-6), [x, w, b], up)
    want = _grads(lambda x, w, b: F.layer_norm(x, [shape[-1]], w, b, 1e-6), [x, w, b], up)
    _close(ours, want, 2e-5)


def test_non_finite_values_propagate(ops):
    """-ffast-math must not hide a NaN or Inf: the trainer's non-finite stop relies on them."""
    x = paddle.to_tensor([[float("nan"), 1.0, float("inf"), -2.0]])
    y = ops.mixer_bias_gelu(x, paddle.zeros([4]), True, -1, 1)[0].numpy()
    assert np.isnan(y[0, 0]) and np.isfinite(y[0, 1]) and not np.isfinite(y[0, 2])
    ln = cpu_kernels.layer_norm(x, paddle.ones([4]), paddle.zeros([4]), 1e-6).numpy()
    assert np.isnan(ln).all()


@pytest.mark.parametrize("with_scale", [True, False])
def test_residual_add_equals_paddle(ops, with_scale):
    rng = np.random.default_rng(2)
    x = paddle.to_tensor(rng.standard_normal((3, 5, 7)).astype("float32"))
    y = paddle.to_tensor(rng.standard_normal((3, 5, 7)).astype("float32"))
    up = paddle.to_tensor(rng.standard_normal((3, 5, 7)).astype("float32"))
    scale = paddle.to_tensor([0.0, 1.25, 1.25]) if with_scale else None
    ours = _grads(lambda x, y: layers._ResidualAdd.apply(x, y, scale), [x, y], up)
    want = _grads(lambda x, y: x + (y * scale.reshape([3, 1, 1]) if with_scale else y),
                  [x, y], up)
    _close(ours, want, 1e-6)


def test_residual_add_draws_drop_path_masks_as_paddle(ops):
    drop = layers.DropPath(0.5)
    drop.train()
    x, y = paddle.randn([64, 3]), paddle.randn([64, 3])
    y.stop_gradient = False
    paddle.seed(3)
    fused = drop.residual(x, y)
    paddle.seed(3)
    np.testing.assert_allclose(fused.numpy(), (x + drop(y)).numpy(), rtol=1e-6, atol=1e-6)
    kept = (fused - x).abs().sum(axis=1).numpy() > 0
    assert 0 < kept.sum() < 64  # some branches dropped, some kept


@pytest.mark.parametrize("family", sorted(TINY_BACKBONES))
@pytest.mark.parametrize("drop_path_rate", [0.0, 0.5])
def test_backbones_train_to_the_same_gradients(ops, family, drop_path_rate, monkeypatch):
    """A whole training backward with the kernels against one with Paddle's ops only (with
    stochastic depth: the same seed draws the same masks both ways)."""
    grads = []
    for use in (True, False):
        if not use:
            monkeypatch.setattr(cpu_kernels, "wanted", lambda *a: False)
            monkeypatch.setattr(cpu_kernels, "cpu_training", lambda *a: False)
        paddle.seed(0)
        model = pm.build_backbone(dict(TINY_BACKBONES[family], drop_path_rate=drop_path_rate))
        model.train()
        x = paddle.randn([4, 3, 16, 16])
        loss = (model(x) ** 2).mean()
        loss.backward()
        grads.append((float(loss), {n: p.grad.numpy() for n, p in model.named_parameters()}))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    scale = max(np.abs(g).max() for g in grads[1][1].values())
    for name, want in grads[1][1].items():
        assert np.abs(grads[0][1][name] - want).max() <= 1e-4 * scale, name


def test_used_only_in_dygraph_training_on_cpu(ops, monkeypatch):
    calls = []
    real = cpu_kernels.layer_norm
    monkeypatch.setattr(cpu_kernels, "layer_norm", lambda *a: calls.append(1) or real(*a))
    norm = layers.LayerNorm(8)
    x = paddle.randn([2, 8])
    norm.train()
    norm(x)
    assert calls == [1]
    norm.eval()
    norm(x)
    with paddle.no_grad():  # still training mode, but nothing wants a gradient
        norm.train()
        x.stop_gradient = True
        for p in norm.parameters():
            p.stop_gradient = True
        norm(x)
    assert calls == [1]


def test_exported_training_model_has_no_custom_op(tmp_path, tiny_classifier_cfg):
    """Export traces in eval mode: the program holds Paddle's own ops only."""
    from passl_mixer.export import export_model
    from test_export import tiny_cfg

    cfg = tiny_cfg(tiny_classifier_cfg)
    out = str(tmp_path / "export")
    export_model(cfg, out)
    program = open(os.path.join(out, "inference.json"), encoding="utf-8").read()
    assert "mixer_" not in program and "layer_norm" in program


def test_disabled_or_unbuildable_falls_back_to_paddle(tmp_path):
    """PASSL_MIXER_CPU_KERNELS=0, or a build that fails (here: no compiler on PATH), leaves
    training on Paddle's ops: one warning for the failure, the same loss either way."""
    script = (
        "import paddle, passl_mixer as pm\n"
        "from conftest import TINY_BACKBONE\n"
        "from passl_mixer import cpu_kernels\n"
        "paddle.seed(0); m = pm.build_backbone(dict(TINY_BACKBONE)); m.train()\n"
        "loss = (m(paddle.randn([2, 3, 16, 16])) ** 2).mean(); loss.backward()\n"
        "print('built', cpu_kernels._ops is not None, 'loss', float(loss))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]),
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    runs = {}
    for case, extra in (("off", {"PASSL_MIXER_CPU_KERNELS": "0"}),
                        ("no compiler", {"PATH": str(tmp_path), "CXX": "no-such-compiler",
                                         "CC": "no-such-compiler"}),
                        ("on", {})):
        done = subprocess.run([sys.executable, "-c", script], env=dict(env, **extra),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[case] = (done.stdout.split("built ")[-1], done.stderr)
    assert runs["off"][0].startswith("False") and "could not be built" not in runs["off"][1]
    assert runs["no compiler"][0].startswith("False")
    assert runs["no compiler"][1].count("could not be built") == 1
    assert runs["on"][0].startswith("True")
    losses = {case: float(out.split("loss ")[-1]) for case, (out, _) in runs.items()}
    assert losses["on"] == pytest.approx(losses["off"], rel=1e-5)
    assert losses["no compiler"] == losses["off"]


def test_patchify_equals_paddle(ops):
    x = paddle.randn([2, 3, 8, 12])
    up = paddle.randn([2, 6, 48])
    want = lambda x: x.reshape([2, 3, 2, 4, 3, 4]).transpose([0, 2, 4, 1, 3, 5]).reshape(  # noqa: E731
        [2, 6, 48])
    _close(_grads(lambda x: cpu_kernels.patchify(x, 4), [x], up), _grads(want, [x], up), 0)


@pytest.mark.parametrize("bias_axis", [-1, -2])
def test_add_bias_equals_paddle(ops, bias_axis):
    h = paddle.randn([3, 5, 7])
    bias = paddle.randn([7 if bias_axis == -1 else 5])
    want = h + (bias if bias_axis == -1 else bias.unsqueeze(-1))
    np.testing.assert_array_equal(cpu_kernels.add_bias(h, bias, bias_axis).numpy(), want.numpy())
