"""MoCo v3 and BYOL: training signal, momentum updates, heads, checkpoints into a classifier."""
import math

import numpy as np
import paddle
import pytest

import passl_mixer as pm
from passl_mixer.models.architectures.byol import cosine_momentum
from passl_mixer.models.necks.sync_bn import SyncBatchNorm, convert_sync_batchnorm
from passl_mixer.optim import build_optimizer

from conftest import TINY_BACKBONE


def neck(in_channels, num_layers=2, last_bn=False):
    return dict(name="MLPNeck", in_channels=in_channels, hidden_channels=64, out_channels=16,
                num_layers=num_layers, last_bn=last_bn)


def ssl_cfg(name):
    if name == "MoCoV3":
        return dict(name="MoCoV3", backbone=dict(TINY_BACKBONE), projector=neck(32, 3, True),
                    predictor=neck(16), temperature=0.2, base_momentum=0.9)
    return dict(name="BYOL", backbone=dict(TINY_BACKBONE), projector=neck(32), predictor=neck(16),
                base_momentum=0.9)


def tiny_views(n=16, seed=0):
    """Two noisy copies of n random images: the shared content is what the views agree on."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 3, 16, 16)).astype("float32")
    return [paddle.to_tensor(base + 0.3 * rng.standard_normal(base.shape).astype("float32"))
            for _ in range(2)]


def train_steps(model, steps, lr=3e-3):
    opt = paddle.optimizer.AdamW(lr, parameters=[p for p in model.parameters()
                                                 if not p.stop_gradient])
    views = tiny_views()
    losses = []
    for step in range(1, steps + 1):
        out = model(views, None)
        out["loss"].backward()
        opt.step()
        opt.clear_grad()
        model.after_step(step, steps)
        losses.append(float(out["loss"]))
    return losses


@pytest.mark.parametrize("name", ["MoCoV3", "BYOL"])
def test_loss_decreases_on_tiny_data(name):
    paddle.seed(0)
    model = pm.build_model(ssl_cfg(name))
    losses = train_steps(model, 15)
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


@pytest.mark.parametrize("name", ["MoCoV3", "BYOL"])
def test_momentum_update_matches_its_formula(name):
    paddle.seed(1)
    model = pm.build_model(ssl_cfg(name))
    online, target = (model.base_encoder, model.momentum_encoder) if name == "MoCoV3" \
        else (model.online, model.target)
    # the copy starts equal, is left out of the optimizer, and does not share storage
    for (k, p), q in zip(online.named_parameters(), target.parameters()):
        assert q.stop_gradient and np.array_equal(p.numpy(), q.numpy()), k
    train_steps(model, 2)  # now online and target differ
    before = {k: p.numpy().copy() for k, p in target.named_parameters()}
    online_now = {k: p.numpy().copy() for k, p in online.named_parameters()}
    step, total = 3, 10
    model.after_step(step, total)
    m = 1 - (1 - 0.9) * (math.cos(math.pi * step / total) + 1) / 2
    assert model.momentum == pytest.approx(m)
    for k, p in target.named_parameters():
        if k.endswith(("_mean", "_variance")):  # BN running statistics are the target's own
            np.testing.assert_array_equal(p.numpy(), before[k])
        else:
            np.testing.assert_allclose(p.numpy(), m * before[k] + (1 - m) * online_now[k],
                                       rtol=1e-6, atol=1e-7)


def test_lazy_built_model_initialises_the_copy_from_the_source():
    with paddle.LazyGuard():  # shapes only, as when inspecting a large config
        model = pm.build_model(ssl_cfg("MoCoV3"))
    for p in model.parameters():
        p.initialize()
    base, copy = model.base_encoder.state_dict(), model.momentum_encoder.state_dict()
    for k in base:
        np.testing.assert_array_equal(copy[k].numpy(), base[k].numpy())


def test_cosine_momentum_schedule_ends():
    assert cosine_momentum(0.99, 0, 100) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 50, 100) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 100, 100) == pytest.approx(1.0)


def test_mocov3_logits_in_one_process():
    model = pm.build_model(ssl_cfg("MoCoV3"))
    q = paddle.randn([4, 16])
    logits, labels = model.contrastive_logits(q, q)
    assert logits.shape == [4, 4] and labels.numpy().tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(np.diag(logits.numpy()), 1 / 0.2, rtol=1e-5)  # cos(q, q) = 1


@pytest.mark.parametrize("name", ["MoCoV3", "BYOL"])
def test_forward_needs_two_views(name):
    model = pm.build_model(ssl_cfg(name))
    with pytest.raises(pm.ShapeError, match="MultiView"):
        model(paddle.randn([2, 3, 16, 16]), None)


def test_mlp_neck_layout():
    moco_proj = pm.build_neck(neck(32, num_layers=3, last_bn=True))
    kinds = [type(m).__name__ for m in moco_proj.mlp]
    assert kinds == ["Linear", "BatchNorm1D", "ReLU", "Linear", "BatchNorm1D", "ReLU", "Linear",
                     "BatchNorm1D"]
    assert moco_proj.mlp[0].bias is None and moco_proj.mlp[7].weight is None  # no affine at end
    byol = pm.build_neck(neck(32))
    assert [type(m).__name__ for m in byol.mlp] == ["Linear", "BatchNorm1D", "ReLU", "Linear"]
    assert byol.mlp[3].bias is not None
    assert byol(paddle.randn([4, 32])).shape == [4, 16]


def test_sync_batchnorm_is_batchnorm_in_one_process():
    paddle.seed(2)
    plain = pm.build_neck(neck(8, num_layers=3, last_bn=True))
    synced = pm.build_neck(neck(8, num_layers=3, last_bn=True))
    synced.set_state_dict(plain.state_dict())
    synced = convert_sync_batchnorm(synced)
    assert isinstance(synced.mlp[1], SyncBatchNorm)
    assert list(synced.state_dict()) == list(plain.state_dict())  # checkpoints interchange
    x = paddle.randn([6, 8])
    for mode in ("train", "eval"):
        getattr(plain, mode)(), getattr(synced, mode)()
        np.testing.assert_allclose(synced(x).numpy(), plain(x).numpy(), rtol=1e-4, atol=1e-5)
    for k, v in plain.state_dict().items():
        np.testing.assert_allclose(synced.state_dict()[k].numpy(), v.numpy(), rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("name", ["MoCoV3", "BYOL"])
def test_ssl_checkpoint_loads_into_image_classifier(name, tmp_path, tiny_classifier_cfg):
    """The backbone of the right encoder (base / online, not the momentum / target copy)
    reaches the classifier through load_pretrained, i.e. ``model.pretrained`` in a config."""
    from passl_mixer.checkpoints import load_pretrained
    from passl_mixer.engine import save_checkpoint

    paddle.seed(3)
    ssl = pm.build_model(ssl_cfg(name))
    train_steps(ssl, 2)  # the momentum / target backbone now differs from the trained one
    path = str(tmp_path / "ssl.pdckpt")
    save_checkpoint({"model": ssl.state_dict(), "config": {"model": ssl_cfg(name)}}, path)

    clf = pm.build_model(tiny_classifier_cfg)
    summary = load_pretrained(clf, path)
    assert summary["head"] == "reinitialised"
    want = ssl.backbone.state_dict()
    other = (ssl.momentum_encoder if name == "MoCoV3" else ssl.target).backbone.state_dict()
    got = clf.backbone.state_dict()
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_array_equal(got[k].numpy(), want[k].numpy())
    assert any(not np.array_equal(got[k].numpy(), other[k].numpy()) for k in want)
    prefix = type(ssl).BACKBONE_PREFIX
    assert prefix == {"MoCoV3": "base_encoder.backbone.", "BYOL": "online.backbone."}[name]
    assert all(f"{prefix}{k}" in ssl.state_dict() for k in want)


def test_freeze_backbone_trains_only_the_head(tiny_classifier_cfg):
    cfg = dict(tiny_classifier_cfg, freeze_backbone=True)
    cfg["backbone"] = dict(cfg["backbone"], drop_path_rate=0.5)  # would make forward random
    model = pm.build_model(cfg)
    before = {k: v.numpy().copy() for k, v in model.backbone.state_dict().items()}
    opt, _ = build_optimizer({"name": "AdamW", "lr": 0.1}, None, model, 10, 10)
    assert {id(p) for p in opt._parameter_list} == {id(p) for p in model.head.parameters()}
    model.train()
    x, y = paddle.randn([8, 3, 16, 16]), paddle.randint(0, 10, [8])
    out = model(x, y)
    assert not model.backbone.training and model.head.training
    np.testing.assert_array_equal(model.extract_features(x).numpy(),
                                  model.extract_features(x).numpy())  # no drop path: eval mode
    out["loss"].backward()
    opt.step()
    for k, v in model.backbone.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])
    assert float(model.head.fc.weight.abs().sum()) > 0


def test_mismatched_widths_are_config_errors_at_build(tiny_classifier_cfg):
    """A neck/head/projector/predictor whose in_channels is not the width feeding it fails at
    build time naming the key and the width to set, not at the first batch inside Paddle."""
    from passl_mixer.errors import ConfigError

    bad = dict(tiny_classifier_cfg, head=dict(tiny_classifier_cfg["head"], in_channels=64))
    with pytest.raises(ConfigError, match=r"model\.head\.in_channels is 64, .* 32 channels"):
        pm.build_model(bad)
    bad = dict(tiny_classifier_cfg, neck=dict(name="BatchNormNeck", in_channels=16))
    with pytest.raises(ConfigError, match=r"model\.neck\.in_channels: 32"):
        pm.build_model(bad)
    for name in ("MoCoV3", "BYOL"):
        cfg = ssl_cfg(name)
        cfg["predictor"] = neck(32)  # the projector gives 16
        with pytest.raises(ConfigError, match=r"model\.predictor\.in_channels: 16"):
            pm.build_model(cfg)
        cfg = ssl_cfg(name)
        cfg["projector"] = dict(cfg["projector"], in_channels=8)
        with pytest.raises(ConfigError, match=r"model\.projector\.in_channels: 32"):
            pm.build_model(cfg)
