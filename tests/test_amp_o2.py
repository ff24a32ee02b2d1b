"""AMP O2 (half-precision weights) on CPU: evaluation, checkpoints, EMA, momentum encoders.

This CPU build of Paddle cannot run a real O2 step: ``paddle.amp.decorate(level='O2')``
returns the model uncast unless the place is a GPU/XPU/custom device (paddle/amp/auto_cast.py,
``amp_decorate``: "check device_type"), ``auto_cast`` is ignored on CPU, and conv2d, matmul
and AdamW have no bfloat16 CPU kernel. What O2 does to the weights is reproduced here with
the function ``decorate`` itself calls on a GPU, ``paddle.amp.auto_cast.amp_initialize``
(same casts, same ``excluded_layers``), and the code paths that must handle half-precision
weights are run on those.
"""
import inspect

import numpy as np
import paddle
import pytest
from paddle.amp.auto_cast import amp_initialize, amp_state

import passl_mixer as pm
from conftest import TINY_BACKBONE, tiny_train_config
from passl_mixer.engine import Trainer
from passl_mixer.checkpoints.weights import load_weights, save_weights, set_weights
from passl_mixer.engine.checkpoint import load_checkpoint
from passl_mixer.engine.ema import ModelEma
from passl_mixer.errors import ConfigError

HALF = (paddle.float16, paddle.bfloat16)


def o2_cast(model, dtype="bfloat16", excluded_layers=None):
    """Cast ``model``'s weights as ``paddle.amp.decorate(level='O2')`` does on a GPU."""
    amp_initialize(models=[model], dtype=dtype, excluded_layers=excluded_layers)
    assert any(p.dtype == paddle.bfloat16 for p in model.parameters())
    return model


def as_float(state):
    return {k: v.astype("float32").numpy() for k, v in state.items()}


# -- item 3: evaluation runs under the run's precision ---------------------------------------
def test_evaluation_runs_under_the_runs_amp_settings(tiny_data, tmp_path):
    """After decorate(level='O2') the weights are half precision: evaluated outside auto_cast,
    the stem conv gets float32 images and Paddle raises a dtype error (at the end of the first
    epoch, before the checkpoint is written). The forward passes of evaluation (model and EMA,
    in training and in Trainer.evaluate(); tools/eval.py's in tests/test_eval_entry.py) must
    run under the run's auto_cast settings; ``amp_state()`` is what auto_cast records of them (Paddle's recompute
    replays it), readable on CPU too."""
    cfg = tiny_train_config(tiny_data, str(tmp_path / "run"), epochs=1, ema={"decay": 0.99})
    cfg["amp"] = {"enable": True, "dtype": "bfloat16", "level": "O2"}
    trainer = Trainer(cfg)
    # on CPU the trainer turns AMP off (Paddle would ignore it); set what a GPU run has
    gpu_settings = {"enable": True, "dtype": "bfloat16", "level": "O2"}
    cpu_settings = getattr(trainer, "amp_settings", None)
    trainer.amp_settings = gpu_settings
    seen = []

    def record(layer, inputs):
        state = amp_state()
        seen.append(None if state is None else (state["enable"], state["dtype"], state["level"]))

    trainer.model.register_forward_pre_hook(record)
    trainer.ema.module.register_forward_pre_hook(record)
    trainer.epoch = 1
    trainer._maybe_evaluate(finished=True)
    trainer.evaluate()
    n_batches = len(trainer.val_loader)
    assert len(seen) == 3 * n_batches  # model, EMA, then Trainer.evaluate()
    assert set(seen) == {(True, "bfloat16", "O2")}
    assert cpu_settings == {"enable": False, "dtype": "bfloat16", "level": "O2"}


# -- item 4: checkpoints of an O2 run hold float32 weights ------------------------------------
def test_o2_bf16_checkpoint_loads_into_a_float32_model(tiny_data, tmp_path):
    """bfloat16 ``.numpy()`` is uint16 bit patterns; read as numbers, -0.848 became 48985.0."""
    cfg = tiny_train_config(tiny_data, str(tmp_path / "run"), epochs=1, ema={"decay": 0.99})
    trainer = Trainer(cfg)
    o2_cast(trainer.model)
    bf16_values = as_float(trainer.model.state_dict())
    trainer.save(is_best=False)  # the real checkpoint code: Trainer.state() + save_checkpoint
    path = str(tmp_path / "run" / "checkpoints" / "latest.pdckpt")

    saved = load_checkpoint(path)
    assert all(v.dtype == paddle.float32 for v in saved["model"].values())
    assert all(v.dtype == paddle.float32 for v in saved["ema"].values())
    fresh = pm.build_model(cfg["model"])
    set_weights(fresh, load_weights(path))
    for k, v in fresh.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), bf16_values[k], err_msg=k)

    # resuming an O2 run: the float32 checkpoint goes back into the half-precision model
    o2_model = o2_cast(pm.build_model(cfg["model"]))
    set_weights(o2_model, load_weights(path))
    for k, v in o2_model.state_dict().items():
        np.testing.assert_array_equal(v.astype("float32").numpy(), bf16_values[k], err_msg=k)


def test_half_precision_weight_files_load_as_their_values(tmp_path, tiny_classifier_cfg):
    """Files written before the fix (bfloat16 tensors, or their uint16 ``.numpy()``) are
    converted exactly, never numerically."""
    model = o2_cast(pm.build_model(tiny_classifier_cfg))
    values = as_float(model.state_dict())
    for name, state in (("tensors.pdparams", model.state_dict()),
                        ("numpy.pdparams", {k: v.numpy() for k, v in model.state_dict().items()})):
        paddle.save(state, str(tmp_path / name))
        fresh = pm.build_model(tiny_classifier_cfg)
        set_weights(fresh, load_weights(str(tmp_path / name)))
        for k, v in fresh.state_dict().items():
            np.testing.assert_array_equal(v.numpy(), values[k], err_msg=f"{name} {k}")
    pytest.importorskip("safetensors")
    save_weights(model.state_dict(), str(tmp_path / "w.safetensors"))
    loaded = load_weights(str(tmp_path / "w.safetensors"))
    assert all(a.dtype == np.float32 for a in loaded.values())
    for k in values:
        np.testing.assert_array_equal(loaded[k], values[k], err_msg=k)


# -- item 5: the EMA stays float32 and keeps moving -------------------------------------------
def test_ema_of_a_half_precision_model_is_float32_and_moves(tiny_classifier_cfg):
    model = o2_cast(pm.build_model(tiny_classifier_cfg))
    ema = ModelEma(model, decay=0.9999)
    assert all(v.dtype == paddle.float32 for v in ema.state_dict().values())
    start = {k: v.numpy().copy() for k, v in ema.state_dict().items()}
    for p in model.parameters():
        p.set_value((p.astype("float32") + 0.5).astype(p.dtype))
    ema.update(model)
    now = as_float(model.state_dict())
    for k, v in ema.state_dict().items():
        expected = 0.9999 * start[k] + 0.0001 * now[k]
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-6, atol=1e-7, err_msg=k)
        if k.endswith("weight"):
            assert not np.array_equal(v.numpy(), start[k]), f"{k} did not move"


def test_ema_averages_the_optimizers_float32_master_weights(tiny_classifier_cfg):
    """Under O2 the multi-precision optimizer keeps a float32 master copy of each half
    weight (created at its first step, by ``_create_master_weight``; AdamW has no bfloat16
    CPU kernel to take that step here) and saves it as ``master_weights``: the EMA follows it."""
    model = pm.build_model(tiny_classifier_cfg)
    optimizer = paddle.optimizer.AdamW(parameters=model.parameters(), multi_precision=True)
    ema = ModelEma(model, decay=0.5, optimizer=optimizer)
    o2_cast(model)
    for p in model.parameters():
        if p.dtype == paddle.bfloat16:
            optimizer._create_master_weight(p)
    master = optimizer.state_dict()["master_weights"]
    for p in model.parameters():
        if p.name in master:
            master[p.name].set_value(master[p.name] + 1e-3)  # finer than bfloat16 resolves
    start = {k: v.numpy().copy() for k, v in ema.state_dict().items()}
    ema.update(model)
    for key, p in model.named_parameters():
        src = master[p.name].numpy() if p.name in master else p.astype("float32").numpy()
        np.testing.assert_allclose(ema.state_dict()[key].numpy(), 0.5 * start[key] + 0.5 * src,
                                   rtol=1e-6, atol=1e-7, err_msg=key)


def test_a_half_precision_ema_from_an_old_checkpoint_loads(tiny_classifier_cfg):
    model = pm.build_model(tiny_classifier_cfg)
    half = o2_cast(pm.build_model(tiny_classifier_cfg))
    ema = ModelEma(model, decay=0.9)
    ema.set_state_dict(half.state_dict())
    for k, v in ema.state_dict().items():
        assert v.dtype == paddle.float32
        np.testing.assert_array_equal(v.numpy(), half.state_dict()[k].astype("float32").numpy())


# -- item 8: a dtype the device cannot run is a config error ----------------------------------
def test_amp_dtype_the_device_cannot_run_is_a_config_error():
    """Paddle turns AMP off without a word when the GPU lacks the dtype (bfloat16 needs compute
    capability 8.0: not V100 or T4). The check uses paddle.amp.is_bfloat16_supported /
    is_float16_supported (Paddle 2.5+ and 3.x); on CPU, Paddle reports bfloat16 and no float16,
    which exercises both outcomes. The GPU branch (capability in the message) needs a GPU."""
    from passl_mixer.engine.amp import check_amp_support
    assert callable(paddle.amp.is_bfloat16_supported)
    check_amp_support("bfloat16", "cpu")  # Paddle: supported on CPU
    with pytest.raises(ConfigError, match=r"^amp\.dtype is float16, which this device \(cpu\) "
                                          r"cannot run.*-o amp\.dtype=bfloat16"):
        check_amp_support("float16", "cpu")


# -- item 9: momentum encoders stay float32 ---------------------------------------------------
def ssl_cfg(name):
    neck = dict(name="MLPNeck", in_channels=32, hidden_channels=64, out_channels=16)
    pred = dict(name="MLPNeck", in_channels=16, hidden_channels=64, out_channels=16)
    return dict(name=name, backbone=dict(TINY_BACKBONE), projector=neck, predictor=pred,
                base_momentum=0.999)


@pytest.mark.parametrize("name,target", [("MoCoV3", "momentum_encoder"), ("BYOL", "target")])
def test_momentum_encoder_stays_float32_and_moves_under_o2(name, target):
    """In bfloat16, ``t * 0.999 + p * 0.001`` rounds back to ``t``: the momentum encoder must
    be excluded from the O2 cast, and the update computed in float32."""
    from passl_mixer.engine.amp import o2_decorate_kwargs
    model = pm.build_model(ssl_cfg(name))
    kwargs = o2_decorate_kwargs(model, "bfloat16")
    assert kwargs["excluded_layers"] == [getattr(model, target)]
    o2_cast(model, "bfloat16", kwargs["excluded_layers"])
    encoder = getattr(model, target)
    online = model.base_encoder if name == "MoCoV3" else model.online
    assert all(p.dtype == paddle.float32 for p in encoder.parameters())
    assert online.projector.parameters()[0].dtype == paddle.bfloat16
    for p in online.parameters():
        if not p.stop_gradient:
            p.set_value((p.astype("float32") + 0.25).astype(p.dtype))
    before = {k: v.numpy().copy() for k, v in encoder.named_parameters()}
    online_now = {k: v.astype("float32").numpy() for k, v in online.named_parameters()
                  if not v.stop_gradient}  # trained weights (not BatchNorm statistics)
    model.after_step(0, 100)  # momentum 0.999
    assert model.momentum == pytest.approx(0.999)
    for k, v in encoder.named_parameters():
        if k not in online_now:
            continue
        expected = 0.999 * before[k] + 0.001 * online_now[k]
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-6, atol=1e-7, err_msg=k)
        assert not np.array_equal(v.numpy(), before[k]), f"{k} did not move"


# -- item 12: float32 master gradients under O2 -----------------------------------------------
def test_o2_decorate_uses_master_gradients(tiny_classifier_cfg):
    """ClipGradByGlobalNorm squares and sums float16 gradients in float16 (paddle/nn/clip.py,
    sum_square_list_fp16): a global norm above 256 is inf and zeroes the step. master_grad=True
    (in decorate since Paddle 2.5) gives float32 gradients. A classifier excludes no layer."""
    from passl_mixer.engine.amp import o2_decorate_kwargs
    assert "master_grad" in inspect.signature(paddle.amp.decorate).parameters
    kwargs = o2_decorate_kwargs(pm.build_model(tiny_classifier_cfg), "float16")
    assert kwargs == {"level": "O2", "dtype": "float16", "master_grad": True}


# -- kept as it was: the optimizer's float32 master weights are saved and restored ------------
def test_o2_master_weights_are_saved_float32_and_restored(tiny_data, tmp_path):
    """O2's multi-precision optimizer holds a float32 master copy of every half weight (set
    up by decorate, created at the first step; made here as that step makes it). It is the
    weight that training continues from: the checkpoint keeps it in float32 and --resume
    puts it back."""
    from paddle.amp.auto_cast import _set_multi_precision
    out = str(tmp_path / "run")
    # each Trainer in a fresh name scope, as in a new process: the optimizer's state is keyed
    # by parameter name
    with paddle.utils.unique_name.guard():
        trainer = Trainer(tiny_train_config(tiny_data, out, epochs=1))
    o2_cast(trainer.model)
    _set_multi_precision(trainer.optimizer, True)  # what decorate(level='O2') does
    for p in trainer.model.parameters():
        if p.dtype == paddle.bfloat16:
            trainer.optimizer._create_master_weight(p)
            master = trainer.optimizer._master_weights[p.name]
            master.set_value(master + 1e-3)  # finer than the bfloat16 weight resolves
    expected = {k: v.numpy().copy() for k, v in trainer.optimizer._master_weights.items()}
    assert expected
    trainer.save(is_best=False)
    saved = load_checkpoint(str(tmp_path / "run" / "checkpoints" / "latest.pdckpt"))
    assert {k: v.dtype for k, v in saved["optimizer"]["master_weights"].items()} == \
        {k: paddle.float32 for k in expected}

    with paddle.utils.unique_name.guard():
        resumed = Trainer(tiny_train_config(tiny_data, out, epochs=2), resume="auto")
    restored = resumed.optimizer._master_weights
    assert restored.keys() == expected.keys()
    assert set(restored) <= {p.name for p in resumed.model.parameters()}
    for k, v in expected.items():
        np.testing.assert_array_equal(restored[k].numpy(), v, err_msg=k)
