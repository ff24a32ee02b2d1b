"""Trainer features run in-process on tiny data: accumulation, to_static, EMA, the model's loop
hooks, AMP on CPU (float32, except bfloat16 O1 through to_static)."""
import numpy as np
import paddle
import pytest

from conftest import max_weight_diff, tiny_train_config
from passl_mixer.engine import Trainer
from passl_mixer.engine.ema import ModelEma
from passl_mixer.errors import ConfigError
from passl_mixer.models.ema import ema_update_


def train_weights(cfg):
    trainer = Trainer(cfg)
    trainer.train()
    return {k: v.numpy() for k, v in trainer.model.state_dict().items()}, trainer


def sgd(cfg):
    cfg["optimizer"] = {"name": "SGD", "lr": 0.1, "momentum": 0.9, "grad_clip": 1.0}
    return cfg


def test_gradient_accumulation_equals_the_large_batch(tiny_data, tmp_path):
    big = sgd(tiny_train_config(tiny_data, str(tmp_path / "a"), epochs=1))
    acc = sgd(tiny_train_config(tiny_data, str(tmp_path / "b"), epochs=1, accum_steps=2))
    acc["data"]["train"]["batch_size"] = 8
    wa, ta = train_weights(big)
    wb, tb = train_weights(acc)
    assert ta.global_step == tb.global_step == 6 and tb.global_batch == 16
    assert max_weight_diff(wa, wb) <= 1e-5


def test_to_static_training_matches_dygraph(tiny_data, tmp_path):
    dy = sgd(tiny_train_config(tiny_data, str(tmp_path / "dy"), epochs=1))
    st = sgd(tiny_train_config(tiny_data, str(tmp_path / "st"), epochs=1, to_static=True))
    wd, _ = train_weights(dy)
    ws, trainer = train_weights(st)
    from paddle.jit.dy2static.program_translator import StaticFunction
    assert isinstance(trainer.train_model.forward, StaticFunction)  # really converted
    assert max_weight_diff(wd, ws) <= 1e-4


def test_ema_follows_its_formula(tiny_classifier_cfg):
    import passl_mixer as pm
    model = pm.build_model(tiny_classifier_cfg)
    ema = ModelEma(model, decay=0.9)
    start = {k: v.numpy().copy() for k, v in ema.state_dict().items()}
    for p in model.parameters():
        p.set_value(p + 1.0)
    ema.update(model)
    for k, v in ema.state_dict().items():
        expected = 0.9 * start[k] + 0.1 * model.state_dict()[k].numpy()
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert all(p.stop_gradient for p in ema.module.parameters())


def test_ema_is_evaluated_and_saved(tiny_data, tmp_path):
    cfg = tiny_train_config(tiny_data, str(tmp_path / "e"), epochs=1, ema={"decay": 0.5})
    _, trainer = train_weights(cfg)
    assert "ema_top1" in trainer.history[-1]
    assert trainer.state()["ema"] is not None


@pytest.mark.parametrize("untrained", ["average", "keep"])
def test_ema_update_averages_or_keeps_the_batchnorm_statistics(untrained):
    """The model EMA averages every entry (running statistics too); a momentum encoder keeps
    its own running statistics. Trained weights are averaged either way."""
    paddle.seed(0)
    source = paddle.nn.Sequential(paddle.nn.Linear(4, 3), paddle.nn.BatchNorm1D(3))
    target = paddle.nn.Sequential(paddle.nn.Linear(4, 3), paddle.nn.BatchNorm1D(3))
    source.train()
    source(paddle.randn([8, 4]) * 3.0 + 1.0)  # moves the source's running statistics
    for p in source.parameters():
        if not p.stop_gradient:
            p.set_value(p + 1.0)
    before = {k: v.numpy().copy() for k, v in target.state_dict().items()}
    now = {k: v.numpy() for k, v in source.state_dict().items()}
    ema_update_(target, source, 0.75, untrained=untrained)
    for k, v in target.state_dict().items():
        statistic = k.endswith(("_mean", "_variance"))
        expected = before[k] if statistic and untrained == "keep" else \
            0.75 * before[k] + 0.25 * now[k]
        assert not np.array_equal(before[k], now[k]), k
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-6, atol=1e-7, err_msg=k)


def test_the_loop_calls_the_model_hooks_at_their_points(tiny_data, tmp_path):
    """after_step after each optimizer update, after_epoch when an epoch's steps are done, then
    after_evaluation with the metrics just evaluated, all before the epoch's checkpoint."""
    cfg = tiny_train_config(tiny_data, str(tmp_path / "h"), epochs=2, eval_interval=1)
    trainer = Trainer(cfg)
    events = []
    latest = tmp_path / "h" / "checkpoints" / "latest.pdckpt"
    trainer.model.after_step = lambda step, total: events.append(
        ("step", step, total, trainer.global_step))
    trainer.model.after_epoch = lambda epoch: events.append(
        ("epoch", epoch, len(trainer.history), latest.exists()))
    trainer.model.after_evaluation = lambda metrics: events.append(
        ("evaluation", metrics["top1"], len(trainer.history), latest.exists()))
    trainer.train()
    n, total = trainer.steps_per_epoch, trainer.total_steps
    expected = []
    for epoch in (1, 2):
        expected += [("step", s, total, s) for s in range((epoch - 1) * n + 1, epoch * n + 1)]
        expected += [("epoch", epoch, epoch - 1, epoch == 2),
                     ("evaluation", trainer.history[epoch - 1]["top1"], epoch, epoch == 2)]
    assert events == expected


def test_a_model_without_the_loop_hooks_is_a_config_error(tiny_data, tmp_path, monkeypatch):
    import passl_mixer.engine.trainer as trainer_module
    monkeypatch.setattr(trainer_module, "build_model", lambda cfg: paddle.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match=r"Linear does not inherit passl_mixer\.models\."
                                          r"TrainingHooks"):
        Trainer(tiny_train_config(tiny_data, str(tmp_path / "x")))


def test_amp_on_cpu_warns_and_trains_in_float32(tiny_data, tmp_path, capsys):
    if paddle.device.is_compiled_with_cuda():
        pytest.skip("this Paddle build has a GPU: AMP is real here")
    cfg = tiny_train_config(tiny_data, str(tmp_path / "amp"), epochs=1, max_steps=2)
    cfg["amp"] = {"enable": True, "dtype": "float16", "level": "O2"}
    trainer = Trainer(cfg)
    assert "on CPU only bfloat16 O1 trains in half precision" in capsys.readouterr().out
    assert trainer.amp_enabled is False and trainer.scaler is None and not trainer.cpu_bf16
    trainer.train()
    assert all(p.dtype == paddle.float32 for p in trainer.model.parameters())


def test_bfloat16_amp_on_cpu_trains_in_bfloat16(tiny_data, tmp_path):
    """amp bfloat16 O1 on CPU: the traced forward and backward run bfloat16 oneDNN matmuls, the
    weights stay float32, and the result is fp32's within bfloat16 rounding (but not equal)."""
    if paddle.device.is_compiled_with_cuda():
        pytest.skip("this Paddle build has a GPU: AMP runs in dygraph there")
    fp32 = sgd(tiny_train_config(tiny_data, str(tmp_path / "fp32"), epochs=1, max_steps=3))
    bf16 = sgd(tiny_train_config(tiny_data, str(tmp_path / "bf16"), epochs=1, max_steps=3))
    bf16["amp"] = {"enable": True, "dtype": "bfloat16", "level": "O1"}
    w32, _ = train_weights(fp32)
    w16, trainer = train_weights(bf16)
    assert trainer.cpu_bf16 and all(p.dtype == paddle.float32 for p in trainer.model.parameters())
    images, target = paddle.randn([16, 3, 16, 16]), paddle.zeros([16], dtype="int64")
    program = trainer.train_model.forward.get_concrete_program(images, target)[1].train_program
    for part in (program.forward_program, program.backward_program):
        bf16_matmuls = [line for line in str(part).splitlines()
                        if "_op.matmul" in line and "bf16" in line.rsplit("->", 1)[-1]]
        assert bf16_matmuls, f"no bfloat16 matmul in the traced program:\n{part}"
    assert 1e-6 < max_weight_diff(w32, w16) <= 0.02


def test_bfloat16_amp_on_cpu_refuses_recompute(tiny_data, tmp_path):
    if paddle.device.is_compiled_with_cuda():
        pytest.skip("this Paddle build has a GPU: AMP runs in dygraph there")
    cfg = tiny_train_config(tiny_data, str(tmp_path / "rc"), epochs=1, max_steps=1)
    cfg["model"]["backbone"]["use_recompute"] = True
    cfg["amp"] = {"enable": True, "dtype": "bfloat16", "level": "O1"}
    with pytest.raises(ConfigError, match="amp bfloat16 on CPU.*use_recompute"):
        Trainer(cfg)


def test_linear_lr_scaling_with_global_batch(tiny_data, tmp_path):
    cfg = tiny_train_config(tiny_data, str(tmp_path / "s"), epochs=1, base_batch_size=8)
    trainer = Trainer(cfg)
    assert trainer.lr_scale == 2.0 and trainer.lr_scheduler.base_lr == pytest.approx(0.006)
