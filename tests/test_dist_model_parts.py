"""Model parts under data parallel (2 processes, gloo on CPU): recompute, SyncBatchNorm under
to_static and AMP, and BatchNorm running statistics that agree across ranks."""
import json
import os

import pytest

from conftest import final_weights, max_weight_diff, run_tool, tiny_train_config, write_yaml


def _sgd_config(tiny_data, out, **train):
    cfg = tiny_train_config(tiny_data, out, **train)
    # SGD, not Adam: see test_train_distributed (Adam turns float noise on zero-gradient biases
    # into lr-sized steps, which would hide what is compared here)
    cfg["optimizer"] = {"name": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
                        "grad_clip": 1.0}
    cfg["data"]["train"]["batch_size"] = 8
    return cfg


def test_recompute_under_data_parallel_equals_no_recompute(tiny_data, tmp_path):
    """Recompute inside paddle.DataParallel trains (the reentrant PyLayer version raised
    'parameter ... has been ready before' at the first backward) and reaches the weights of
    the run without recompute, with dropout and stochastic depth on: the recomputed forward
    replays the same random masks."""
    weights = []
    for recompute in (False, True):
        out = str(tmp_path / f"recompute_{recompute}")
        cfg = _sgd_config(tiny_data, out, epochs=1)
        cfg["model"]["backbone"].update(drop_rate=0.2, drop_path_rate=0.3,
                                        use_recompute=recompute)
        run_tool(["tools/train.py", "-c", write_yaml(tmp_path / f"r{recompute}.yaml", cfg)],
                 cwd=str(tmp_path), launch_procs=2)
        weights.append(final_weights(out))
    assert max_weight_diff(*weights) <= 1e-5


def _bn_config(tiny_data, out, **train):
    """The tiny classifier with a BatchNorm neck (as the linear probe's), so that BatchNorm
    statistics matter."""
    cfg = _sgd_config(tiny_data, out, **train)
    cfg["model"]["neck"] = {"name": "BatchNormNeck", "in_channels": 32}
    return cfg


def test_sync_bn_under_to_static_equals_dygraph(tiny_data, tmp_path):
    """distributed.sync_bn with train.to_static on 2 processes trains (the running statistics
    were updated with Tensor.set_value, which a static-graph value lacks) and matches dygraph,
    running statistics included."""
    weights = []
    for to_static in (False, True):
        out = str(tmp_path / f"static_{to_static}")
        cfg = _bn_config(tiny_data, out, epochs=1, to_static=to_static)
        cfg["distributed"] = {"sync_bn": True}
        run_tool(["tools/train.py", "-c", write_yaml(tmp_path / f"s{to_static}.yaml", cfg)],
                 cwd=str(tmp_path), launch_procs=2)
        weights.append(final_weights(out))
    assert any("_mean" in k for k in weights[0])
    assert max_weight_diff(*weights) <= 1e-4


def test_sync_bn_stays_float32_under_amp_o2():
    """paddle.amp.decorate(level='O2') keeps Paddle's BatchNorm types in float32; ours must stay
    float32 too (a float16 sum of squares over a batch overflows), computing in float32 and
    returning the input's dtype.

    On a CPU paddle.amp.decorate returns the model untouched (it casts only on GPU/XPU/custom
    devices), so the test also calls amp_initialize, the function decorate casts with after
    its device checks: that is the part that would turn the layer into bfloat16 on a GPU."""
    import numpy as np
    import paddle
    from paddle.amp.auto_cast import amp_initialize

    from passl_mixer.models.necks.sync_bn import SyncBatchNorm, convert_sync_batchnorm

    paddle.seed(0)
    model = convert_sync_batchnorm(paddle.nn.Sequential(paddle.nn.Linear(4, 6),
                                                        paddle.nn.BatchNorm1D(6)))
    bn = model[1]
    assert isinstance(bn, SyncBatchNorm)
    model = paddle.amp.decorate(model, level="O2", dtype="bfloat16")
    amp_initialize(models=[model], dtype="bfloat16", excluded_layers=None)
    assert model[0].weight.dtype == paddle.bfloat16  # the rest is cast as usual
    for name, t in list(bn.named_parameters()) + list(bn.named_buffers()):
        assert t.dtype == paddle.float32, name

    x = np.random.default_rng(0).standard_normal((8, 6)).astype("float32") * 50 + 100
    x16 = paddle.to_tensor(x).astype("bfloat16")
    bn.train()
    y = bn(x16)
    assert y.dtype == paddle.bfloat16
    ref = (x - x.mean(0)) / np.sqrt(x.var(0) + bn._epsilon)
    np.testing.assert_allclose(y.astype("float32").numpy(), ref, atol=0.05)
    np.testing.assert_allclose(bn._mean.numpy(), 0.1 * x.mean(0), rtol=0.02)
    bn.eval()
    assert bn(x16).dtype == paddle.bfloat16


def test_to_static_with_recompute_is_refused(tiny_data, tmp_path):
    """Under paddle.jit.to_static Paddle's recompute only tags ops for its auto-parallel pass:
    nothing would be recomputed and memory use would silently stay as without it."""
    from passl_mixer.engine import Trainer
    from passl_mixer.errors import ConfigError

    cfg = tiny_train_config(tiny_data, str(tmp_path / "out"), to_static=True)
    cfg["model"]["backbone"]["use_recompute"] = True
    with pytest.raises(ConfigError) as exc:
        Trainer(cfg)
    assert "train.to_static" in str(exc.value)
    assert "model.backbone.use_recompute" in str(exc.value)
    cfg["model"]["backbone"]["use_recompute"] = False
    Trainer(cfg)  # either alone is fine


def test_batchnorm_statistics_agree_across_ranks(tiny_data, tmp_path):
    """Without sync_bn every rank updates its BatchNorm running statistics from its own share
    of the data. Evaluation and checkpoints use their average over ranks, so the metrics a
    2-process run reports are those of its checkpoint evaluated in 1 process."""
    out = str(tmp_path / "train")
    cfg = _bn_config(tiny_data, out, epochs=2)
    cfg["data"]["val"]["batch_size"] = 4
    path = write_yaml(tmp_path / "bn.yaml", cfg)
    run_tool(["tools/train.py", "-c", path], cwd=str(tmp_path), launch_procs=2)
    reported = json.load(open(os.path.join(out, "metrics.json")))[-1]
    eval_out = str(tmp_path / "eval")
    run_tool(["tools/eval.py", "-c", path, "--output", eval_out,
              "-o", f"weights={out}/checkpoints/latest.pdckpt"])
    recomputed = json.load(open(os.path.join(eval_out, "eval.json")))
    assert reported["num_samples"] == recomputed["num_samples"] == 24
    assert reported["loss"] == pytest.approx(recomputed["loss"], abs=1e-5)
    assert reported["top1"] == pytest.approx(recomputed["top1"])
