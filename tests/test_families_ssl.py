"""Self-supervised pretraining and the linear probe with every backbone family: the demo
configs' MoCo v3 and BYOL models (configs/demo/*.yaml) with each family's tiny backbone take a
training step (finite loss, momentum encoder moved towards the trained one), their checkpoint
feeds the linear-probe classifier (frozen backbone, only the head trains)."""
import copy
import math
import os

import numpy as np
import paddle
import pytest

import passl_mixer as pm
from conftest import ROOT, TINY_BACKBONES
from passl_mixer.checkpoints import load_pretrained
from passl_mixer.engine import save_checkpoint
from passl_mixer.optim import build_optimizer

FAMILIES = sorted(TINY_BACKBONES)
DEMO = {"MoCoV3": "configs/demo/mocov3_mixer_digits.yaml",
        "BYOL": "configs/demo/byol_mixer_digits.yaml",
        "probe": "configs/demo/linear_probe_digits.yaml"}


def demo_model(which, family):
    """The demo config's model section with the family's tiny backbone in place of the Mixer."""
    cfg = copy.deepcopy(pm.load_config(os.path.join(ROOT, DEMO[which]))["model"])
    backbone = dict(TINY_BACKBONES[family])
    cfg["backbone"] = backbone
    for key in ("projector", "neck", "head"):
        if key in cfg:
            cfg[key]["in_channels"] = backbone["hidden_dim"]
    return cfg


def views(n=8, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 3, 16, 16)).astype("float32")
    return [paddle.to_tensor(base + 0.3 * rng.standard_normal(base.shape).astype("float32"))
            for _ in range(2)]


def ssl_step(model):
    opt = paddle.optimizer.AdamW(1e-3, parameters=[p for p in model.parameters()
                                                   if not p.stop_gradient])
    model.train()
    out = model(views(), None)
    out["loss"].backward()
    opt.step()
    opt.clear_grad()
    model.after_step(1, 10)
    return float(out["loss"])


@pytest.mark.parametrize("method", ["MoCoV3", "BYOL"])
@pytest.mark.parametrize("family", FAMILIES)
def test_ssl_training_step_then_linear_probe(method, family, tmp_path):
    paddle.seed(0)
    ssl = pm.build_model(demo_model(method, family))
    assert type(ssl.backbone).__name__ == pm.BACKBONES.get(family).__name__
    online, target = (ssl.base_encoder, ssl.momentum_encoder) if method == "MoCoV3" \
        else (ssl.online, ssl.target)
    start = {k: p.numpy().copy() for k, p in target.backbone.named_parameters()}
    assert math.isfinite(ssl_step(ssl))
    trained = {k: p.numpy() for k, p in online.backbone.named_parameters()}
    moved = {k: p.numpy() for k, p in target.backbone.named_parameters()}
    m = ssl.momentum
    assert 0 < m < 1
    for k in start:  # the EMA update: target = m * target + (1 - m) * online
        np.testing.assert_allclose(moved[k], m * start[k] + (1 - m) * trained[k],
                                   rtol=1e-5, atol=1e-7, err_msg=k)
    assert any(not np.array_equal(moved[k], start[k]) for k in start)

    # the pretrained backbone reaches the demo's linear probe through load_pretrained
    path = str(tmp_path / "ssl.pdckpt")
    save_checkpoint({"model": ssl.state_dict(), "config": {"model": demo_model(method, family)}},
                    path)
    probe = pm.build_model(demo_model("probe", family))
    assert probe.freeze_backbone
    load_pretrained(probe, path)
    for k, v in probe.backbone.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), ssl.backbone.state_dict()[k].numpy(), err_msg=k)
    probe_step_trains_only_the_head(probe)


def probe_step_trains_only_the_head(model):
    before = {k: v.numpy().copy() for k, v in model.backbone.state_dict().items()}
    opt, _ = build_optimizer({"name": "AdamW", "lr": 0.1}, None, model, 10, 10)
    trainable = {id(p) for p in opt._parameter_list}
    assert trainable and not trainable & {id(p) for p in model.backbone.parameters()}
    model.train()
    x, y = views(8, seed=1)[0], paddle.to_tensor(np.arange(8) % model.num_classes, dtype="int64")
    out = model(x, y)
    assert math.isfinite(float(out["loss"]))
    assert not model.backbone.training  # frozen: eval mode, no drop path
    out["loss"].backward()
    opt.step()
    for k, v in model.backbone.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=k)
    assert float(model.head.fc.weight.abs().sum()) > 0
