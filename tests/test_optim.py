import math

import numpy as np
import paddle
import pytest

import passl_mixer as pm
from passl_mixer.errors import ConfigError
from passl_mixer import cpu_kernels
from passl_mixer.optim import AdamW, WarmupDecay, build_optimizer, split_decay


def lrs(sched, n):
    out = []
    for _ in range(n):
        out.append(sched.get_lr())
        sched.step()
    return out


def test_warmup_then_cosine_and_linear():
    s = WarmupDecay(1.0, total_steps=10, warmup_steps=4, decay="cosine", min_lr=0.1)
    v = lrs(s, 11)
    np.testing.assert_allclose(v[:5], [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(v[7], 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 3 / 6)))
    assert v[10] == pytest.approx(0.1)
    s = WarmupDecay(2.0, total_steps=10, warmup_steps=0, decay="linear")
    np.testing.assert_allclose(lrs(s, 11), [2.0 * (1 - t / 10) for t in range(11)], atol=1e-12)
    with pytest.raises(ConfigError):
        WarmupDecay(1.0, total_steps=5, warmup_steps=6)


def test_warmup_in_epochs_and_registry_names(tiny_classifier_cfg):
    model = pm.build_model(tiny_classifier_cfg)
    opt, sched = build_optimizer({"name": "AdamW", "lr": 0.5}, {"name": "Linear", "warmup_epochs": 2},
                                 model, total_steps=30, steps_per_epoch=5, lr_scale=2.0)
    assert sched.warmup_steps == 10 and sched.base_lr == 1.0
    assert isinstance(opt, paddle.optimizer.AdamW)
    with pytest.raises(ConfigError, match="Did you mean 'Cosine'"):
        build_optimizer({"name": "AdamW", "lr": 0.5}, {"name": "Cosin"}, model, 30, 5)


def test_adamw_decays_matrices_only(tiny_classifier_cfg):
    model = pm.build_model(tiny_classifier_cfg)
    decay, no_decay = split_decay(model)
    assert all(p.ndim >= 2 for p in decay) and all(p.ndim <= 1 for p in no_decay)
    # zero gradients: only the decoupled weight decay can move a parameter
    opt, _ = build_optimizer({"name": "AdamW", "lr": 0.1, "weight_decay": 0.5}, None, model, 1, 1)
    before = {n: p.numpy().copy() for n, p in model.named_parameters()}
    (model(paddle.randn([2, 3, 16, 16])).sum() * 0).backward()
    opt.step()
    for n, p in model.named_parameters():
        changed = not np.allclose(before[n], p.numpy())
        if p.ndim >= 2 and np.abs(before[n]).max() > 0:
            assert changed, f"{n} should decay"
        if p.ndim <= 1:
            assert not changed, f"{n} must not decay"


def _adamw_run(cls, clip, steps=4):
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Linear(8, 300), paddle.nn.GELU(),
                                 paddle.nn.Linear(300, 4))
    model[0].weight.optimize_attr["learning_rate"] = 0.5  # a per-parameter learning rate
    sched = paddle.optimizer.lr.CosineAnnealingDecay(0.01, 10)
    decayed = {model[0].weight.name, model[2].weight.name}
    opt = cls(learning_rate=sched, parameters=model.parameters(), weight_decay=0.1,
              apply_decay_param_fun=lambda name: name in decayed,
              grad_clip=paddle.nn.ClipGradByGlobalNorm(clip) if clip else None)
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((16, 8)).astype("float32"))
    for _ in range(steps):
        ((model(x) ** 2).mean() * 10).backward()
        opt.step()
        opt.clear_grad()
        sched.step()
    state = [np.asarray(v) for k, v in opt.state_dict().items() if k != "LR_Scheduler"]
    return [p.numpy() for p in model.parameters()], state


@pytest.mark.parametrize("clip", [None, 0.5, 1e3])  # no clip, clipping, a clip never reached
def test_fused_cpu_adamw_steps_as_paddle(clip, monkeypatch):
    """The fused CPU step (one kernel, the clip folded in) against Paddle's AdamW: the same
    parameters and the same accumulators (moments, beta powers) in the same state dict."""
    calls = []
    real = cpu_kernels.adamw
    monkeypatch.setattr(cpu_kernels, "adamw", lambda *a: calls.append(1) or real(*a))
    params, state = _adamw_run(AdamW, clip)
    assert calls == [1] * 4
    want_params, want_state = _adamw_run(paddle.optimizer.AdamW, clip)
    assert len(state) == len(want_state)
    for got, want in zip(params + state, want_params + want_state):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * np.abs(want).max())
    if clip == 0.5:  # the clip was in effect
        unclipped, _ = _adamw_run(paddle.optimizer.AdamW, None)
        assert max(np.abs(a - b).max() for a, b in zip(unclipped, want_params)) > 1e-4


def test_fused_cpu_adamw_leaves_other_cases_to_paddle(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_kernels, "adamw", lambda *a: calls.append(1))
    model = paddle.nn.Linear(4, 3)
    for opt in (AdamW(parameters=[{"params": model.parameters(), "learning_rate": 0.1}]),
                AdamW(parameters=model.parameters(), amsgrad=True),
                AdamW(parameters=model.parameters(),
                      grad_clip=paddle.nn.ClipGradByNorm(1.0))):
        model(paddle.randn([2, 4])).sum().backward()
        before = model.weight.numpy().copy()
        opt.step()
        opt.clear_grad()
        assert not np.allclose(before, model.weight.numpy())  # Paddle's step ran
    assert calls == []


def test_sgd_with_momentum_groups(tiny_classifier_cfg):
    model = pm.build_model(tiny_classifier_cfg)
    opt, _ = build_optimizer({"name": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
                              "grad_clip": 1.0}, None, model, 1, 1)
    assert isinstance(opt, paddle.optimizer.Momentum)
    with pytest.raises(ConfigError, match="optimizer.lr"):
        build_optimizer({"name": "SGD"}, None, model, 1, 1)
