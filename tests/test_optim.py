import math

import numpy as np
import paddle
import pytest

import passl_mixer as pm
from passl_mixer.errors import ConfigError
from passl_mixer.optim import WarmupDecay, build_optimizer, split_decay


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


def test_sgd_with_momentum_groups(tiny_classifier_cfg):
    model = pm.build_model(tiny_classifier_cfg)
    opt, _ = build_optimizer({"name": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
                              "grad_clip": 1.0}, None, model, 1, 1)
    assert isinstance(opt, paddle.optimizer.Momentum)
    with pytest.raises(ConfigError, match="optimizer.lr"):
        build_optimizer({"name": "SGD"}, None, model, 1, 1)
