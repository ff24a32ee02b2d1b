"""``layers.Linear``: nn.Linear with a CPU backward that makes the bias gradient by a product.

Its speed lives in ``tools/benchmark.py --mode train``; here: the same gradients as
``nn.Linear`` wherever it takes its own path, and exactly ``nn.Linear`` everywhere else."""
import numpy as np
import paddle
import paddle.nn as nn
import pytest

import passl_mixer as pm
from passl_mixer.models import layers
from passl_mixer.models.layers import GatedMlp, Linear, Mlp


def _pair(in_features=12, out_features=7, seed=0):
    paddle.seed(seed)
    reference = nn.Linear(in_features, out_features)
    ours = Linear(in_features, out_features)
    ours.set_state_dict(reference.state_dict())
    return reference, ours


def _grads(layer, x, upstream):
    x = paddle.to_tensor(x, stop_gradient=False)
    y = layer(x)
    (y * paddle.to_tensor(upstream)).sum().backward()
    return y.numpy(), x.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy()


@pytest.mark.parametrize("shape", [(5, 12), (3, 9, 12), (2, 3, 4, 12)])
def test_gradients_equal_nn_linear(shape):
    reference, ours = _pair()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype("float32")
    upstream = rng.standard_normal(shape[:-1] + (7,)).astype("float32")
    for got, want in zip(_grads(ours, x, upstream), _grads(reference, x, upstream)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_own_path_only_in_dygraph_training_with_every_gradient(monkeypatch):
    calls = []
    real = layers._LinearBiasGradAsProduct

    class Counting:
        @staticmethod
        def apply(*args):
            calls.append("_LinearBiasGradAsProduct")
            return real.apply(*args)

    monkeypatch.setattr(layers, "_LinearBiasGradAsProduct", Counting)
    _, ours = _pair()
    x = paddle.randn([4, 12])
    x.stop_gradient = False
    ours(x)
    assert calls == ["_LinearBiasGradAsProduct"]

    for case in ("eval", "frozen weight"):
        calls.clear()
        _, layer = _pair()
        inp = paddle.randn([4, 12])
        inp.stop_gradient = False
        if case == "eval":
            layer.eval()
        if case == "frozen weight":
            layer.weight.stop_gradient = True
        y = layer(inp)
        assert calls == [], case
        np.testing.assert_allclose(y.numpy(), (inp @ layer.weight + layer.bias).numpy(),
                                   rtol=1e-6, atol=1e-6)


def test_input_without_gradient_skips_its_product():
    """E.g. the images at the patch stem: weight and bias gradients as nn.Linear's, no dX."""
    reference, ours = _pair()
    rng = np.random.default_rng(2)
    x = paddle.to_tensor(rng.standard_normal((3, 5, 12)).astype("float32"))  # no gradient
    up = paddle.to_tensor(rng.standard_normal((3, 5, 7)).astype("float32"))
    for layer in (reference, ours):
        (layer(x) * up).sum().backward()
    assert ours(x).grad_fn.name() == "GradNodePyLayer__LinearBiasGradAsProduct"
    assert x.grad is None
    for got, want in ((ours.weight.grad, reference.weight.grad),
                      (ours.bias.grad, reference.bias.grad)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


def test_frozen_weight_still_trains_the_bias():
    reference, ours = _pair()
    for layer in (reference, ours):
        layer.weight.stop_gradient = True
    x = np.random.default_rng(1).standard_normal((6, 12)).astype("float32")
    up = np.ones((6, 7), "float32")
    for layer in (reference, ours):
        y = layer(paddle.to_tensor(x))
        (y * paddle.to_tensor(up)).sum().backward()
    np.testing.assert_allclose(ours.bias.grad.numpy(), reference.bias.grad.numpy(), rtol=1e-6)


def test_mlps_use_it_and_keep_linear_state_dict_names():
    mlp = Mlp(8, 16)
    gated = GatedMlp(8, 16, num_tokens=4)
    assert isinstance(mlp.fc1, Linear) and isinstance(gated.fc2, Linear)
    assert sorted(mlp.state_dict()) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    assert isinstance(mlp.fc1, nn.Linear)  # hooks, init schemes and converters see a Linear


def test_traced_training_step_matches_dygraph(tiny_backbone_cfg):
    """In a to_static program the layer is plain nn.Linear: same loss and gradients."""
    paddle.seed(3)
    model = pm.build_backbone(tiny_backbone_cfg)
    model.train()
    x = paddle.randn([2, 3, 16, 16])
    loss = model(x).mean()
    loss.backward()
    eager = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
    model.clear_gradients()
    static = paddle.jit.to_static(model, full_graph=True)
    static(x).mean().backward()
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), eager[name], rtol=2e-4, atol=1e-6,
                                   err_msg=name)


@pytest.mark.parametrize("size", [(32, 24), (30, 24)])  # 30: not whole patches, the conv runs
def test_patch_stem_trains_as_its_convolution(size):
    """In dygraph CPU training the stem runs as one product over the patches: the output and
    the weight and bias gradients are the convolution's."""
    from passl_mixer.models.backbones.base import PatchStem

    paddle.seed(0)
    stem = PatchStem(8, 3, 16)
    stem.train()
    x = paddle.randn([2, 3, *size])
    y = stem(x)
    up = paddle.randn(y.shape)
    (y * up).sum().backward()
    assert (y.grad_fn.name() == "GradNodePyLayer__LinearBiasGradAsProduct") == (size[0] % 8 == 0)
    got = [y.numpy(), stem.proj.weight.grad.numpy(), stem.proj.bias.grad.numpy()]
    stem.clear_gradients()
    want_y = stem.proj(x).flatten(2).transpose([0, 2, 1])
    (want_y * up).sum().backward()
    want = [want_y.numpy(), stem.proj.weight.grad.numpy(), stem.proj.bias.grad.numpy()]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * np.abs(w).max())
