"""Training throughput on synthetic inputs (forward + backward + optimizer step, no data loading)
against the same run's fp32 matrix-multiply peak.

    python tools/benchmark.py --mode train -c configs/mlp_mixer/mixer_s16_224.yaml --batch-size 16

The peak is what Paddle's dygraph ``paddle.matmul`` reaches on the model's own GEMMs: every
Linear of one forward pass (token-axis ones as ``W^T x``), captured with their input shapes and
replayed as bare matmuls (no bias, no activation). On a CPU whose MKL dygraph GEMM is slow
(AMD: ~90 GFLOP/s fp32) that is the ceiling a dygraph training step can reach, which a
4096x4096 oneDNN GEMM (the inference benchmark's peak) is not.

The replay runs in a process of its own: on the AMD test machine dygraph matmul ran ~7x slower
after a training step in the same process than before it, which made an in-process peak read
far too low. The rounds interleave one training step here and one replay there (A B A B ...),
and each keeps its best time: on a shared machine, load from other work falls on both alike
and the best time is the least disturbed one. ``share_of_peak`` divides the step's FLOP rate
(3 x the forward's, 2 FLOPs per multiply-accumulate) by the peak's.

The process keeps the memory it frees (``keep_freed_memory``), as ``tools/train.py`` does;
``--no-keep-memory`` measures without.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time

import numpy as np

from .child import TimedChild, reply_channel, serve


def add_args(parser):
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("-o", "--override", action="append", default=[])
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: the config's data.train.batch_size")
    parser.add_argument("--steps", type=int, default=5,
                        help="timed rounds (one training step and one GEMM replay each)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--no-keep-memory", action="store_true",
                        help="let the process hand freed memory back to the system")
    parser.add_argument("--to-static", action="store_true",
                        help="train through paddle.jit.to_static (as train.to_static: true)")
    parser.add_argument("--trainer", action="store_true",
                        help="also time the Trainer's step code against the raw step (its "
                             "overhead, data wait aside)")


def model_gemms(model, images):
    """The (kind, left shape, right shape, flops) of every Linear's matmul in one forward of
    ``model`` on ``images``; kind 'token' is a token-axis ``W^T x`` ([k, n]^T @ [B, k, C]),
    'channel' an ordinary [rows, k] @ [k, n]."""
    import paddle
    import paddle.nn as nn

    from ..models.layers import TokenLinear, TokenMixingMlp

    gemms, hooks = [], []

    def token(weight, x_shape):
        b, _, c = x_shape
        k, n = weight.shape
        gemms.append(("token", (b, k, c), (k, n), 2 * b * c * k * n))

    def linear(layer, inputs):
        x, (k, n) = inputs[0], layer.weight.shape
        if isinstance(layer, TokenLinear):
            token(layer.weight, x.shape)
        else:
            rows = int(np.prod(x.shape)) // k
            gemms.append(("channel", (rows, k), (k, n), 2 * rows * k * n))

    def token_mlp(mlp, inputs):  # calls token_linear() on its Linears, not the Linears
        b, _, c = inputs[0].shape
        token(mlp.fc1.weight, (b, 0, c))
        token(mlp.fc2.weight, (b, 0, c))

    for m in model.sublayers():
        if isinstance(m, TokenMixingMlp):
            hooks.append(m.register_forward_pre_hook(token_mlp))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_pre_hook(linear))
    try:
        with paddle.no_grad():
            model(images)
    finally:
        for h in hooks:
            h.remove()
    return gemms


def gemm_replay(gemms):
    """(run, flops): ``run()`` does each GEMM once with random fp32 operands, waiting for the
    last; ``flops`` their total. Repeated shapes (every block's) share one set of operands, so
    the replay holds one block's inputs, not the whole forward's."""
    import collections

    import paddle

    counts = collections.Counter((kind, left, right) for kind, left, right, _ in gemms)
    operands = []
    for (kind, left, right), count in counts.items():
        a, b = (right, left) if kind == "token" else (left, right)
        operands.append((kind == "token", paddle.randn(list(a)), paddle.randn(list(b)), count))

    def run():
        out = None
        for transpose_x, a, b, count in operands:
            for _ in range(count):
                out = paddle.matmul(a, b, transpose_x=transpose_x)
        float(out.flatten()[0])  # waits for the last GEMM
    return run, sum(g[3] for g in gemms)


def _replay_main(gemms) -> None:
    """The child: build the replay, answer its FLOPs, then time one replay per line read."""
    from ..cli import set_threads
    from ..inference import keep_freed_memory

    replies = reply_channel()
    set_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    keep_freed_memory()  # as the training process does
    replay, flops = gemm_replay([(k, tuple(a), tuple(b), f) for k, a, b, f in gemms])
    replay()  # warm up
    serve(replies, str(flops), replay)


def run(args) -> dict:
    import paddle

    from ..cli import current_threads
    from ..config import load_config
    from ..inference import keep_freed_memory
    from ..models.info import classifier_macs
    from ..optim import build_optimizer
    from ..registry import build_model

    kept = False if args.no_keep_memory else keep_freed_memory()
    cfg = load_config(args.config, args.override)
    batch = args.batch_size or cfg["data"]["train"]["batch_size"]
    paddle.seed(0)
    model = build_model(cfg["model"])
    bb = model.backbone
    optimizer, _ = build_optimizer(cfg["optimizer"], cfg.get("lr_scheduler"), model,
                                   total_steps=10_000, steps_per_epoch=1000)
    images = paddle.randn([batch, bb.in_channels, *bb.img_size])
    labels = paddle.to_tensor(np.arange(batch) % model.num_classes, dtype="int64")
    model.eval()
    replay = TimedChild("GEMM replay", "passl_mixer.benchmarks.train",
                        model_gemms(model.backbone, images), current_threads())
    peak_flops = float(replay.first)
    model.train()
    train_model = paddle.jit.to_static(model, full_graph=True) if args.to_static else model

    def step():
        loss = train_model(images, labels)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        return float(loss)  # waits for the step to finish

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    for _ in range(args.warmup):
        step()
    step_times, peak_times = [], []
    try:
        for _ in range(args.steps):
            step_times.append(timed(step))
            peak_times.append(replay.time_once())
    finally:
        replay.close()
    # backward costs about twice the forward: 3 x forward FLOPs (2 FLOPs per MAC) per image
    train_flops = 3 * 2 * classifier_macs(model) * batch
    best, peak_best = min(step_times), min(peak_times)
    result = {
        "config": args.config, "batch_size": batch, "img_size": list(bb.img_size),
        "threads": current_threads(), "paddle": paddle.__version__,
        "device": paddle.device.get_device(), "keep_freed_memory": kept,
        "to_static": bool(args.to_static), "rounds": args.steps,
        "ms_per_step": round(best * 1000, 1),
        "ms_per_step_median": round(statistics.median(step_times) * 1000, 1),
        "img_per_s": round(batch / best, 2),
        "train_gflop_per_s": round(train_flops / best / 1e9, 1),
        "peak_gflop_per_s": round(peak_flops / peak_best / 1e9, 1),
        "share_of_peak": round(train_flops / best / (peak_flops / peak_best), 3),
        "share_of_peak_median": round(train_flops / statistics.median(step_times)
                                      / (peak_flops / statistics.median(peak_times)), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if args.trainer:
        result.update(trainer_overhead(cfg, batch, args.steps, args.warmup))
        print(f"trainer: {result['trainer_ms']} ms/step vs the raw step's {result['raw_ms']}: "
              f"{100 * result['trainer_overhead']:+.1f}% (best of {args.steps} interleaved "
              f"rounds; medians {100 * result['trainer_overhead_median']:+.1f}%)")
    print(f"train: {result['img_per_s']} img/s ({result['ms_per_step']} ms/step, batch {batch}, "
          f"{result['train_gflop_per_s']} GFLOP/s) on {result['device']} with "
          f"{result['threads']} threads; the same run's fp32 GEMM peak (dygraph matmul on the "
          f"model's GEMMs) {result['peak_gflop_per_s']} GFLOP/s: "
          f"{100 * result['share_of_peak']:.0f}% of it (best of {args.steps} interleaved "
          f"rounds; medians {100 * result['share_of_peak_median']:.0f}%)")
    return result


def trainer_overhead(cfg, batch: int, rounds: int, warmup: int) -> dict:
    """The Trainer's per-step cost on top of the raw step (data wait aside): one process, two
    copies of the model from the same seed, one stepped by the raw loop (forward, backward,
    optimizer step, clear), one by the Trainer's own step code (``_forward_backward``, the
    loss/accuracy running sums, ``_optimizer_step`` with its lr schedule, ``after_step``) on
    the same synthetic batch, interleaved; the best times compare. The Trainer is built over
    a temporary two-image folder that it never reads from here."""
    import copy
    import os
    import tempfile

    import paddle
    from PIL import Image

    from ..engine.trainer import Trainer, Window
    from ..optim import build_optimizer
    from ..registry import build_model

    with tempfile.TemporaryDirectory() as tmp:
        cfg = copy.deepcopy(cfg)
        paddle.seed(0)
        model = build_model(cfg["model"])  # the raw loop's copy
        size = list(model.backbone.img_size)
        for c in range(2):
            os.makedirs(os.path.join(tmp, "data", f"class_{c}"))
            Image.new("RGB", (size[1], size[0])).save(os.path.join(tmp, "data", f"class_{c}", "0.png"))
        cfg["data"] = {"train": {"dataset": {"name": "ImageFolder", "root": os.path.join(tmp, "data")},
                                 "transforms": [{"name": "Resize", "size": size}, {"name": "Normalize"}],
                                 "batch_size": batch, "num_workers": 0, "drop_last": False}}
        cfg.setdefault("train", {})
        # one step per epoch: enough epochs that the lr warmup fits in the schedule
        cfg["train"].update(output_dir=os.path.join(tmp, "run"), epochs=100_000, eval_interval=0)
        paddle.seed(0)
        trainer = Trainer(cfg)
        model.train()
        trainer.model.train()
        optimizer, _ = build_optimizer(cfg["optimizer"], cfg.get("lr_scheduler"), model,
                                       total_steps=trainer.total_steps, steps_per_epoch=1)
        bb = model.backbone
        images = paddle.randn([batch, bb.in_channels, *bb.img_size])
        labels = paddle.to_tensor(np.arange(batch) % model.num_classes, dtype="int64")
        window = Window(0, 0)

        def raw():
            model(images, labels)["loss"].backward()
            optimizer.step()
            optimizer.clear_grad()  # CPU kernels run synchronously: nothing to wait for

        def trainer_step():
            out = trainer._forward_backward(images, labels, sync=True)
            window.sums.add(out["loss"], out.get("acc1"))
            trainer._optimizer_step()
            trainer.model.after_step(trainer.global_step, trainer.total_steps)

        times = {"raw": [], "trainer": []}
        for i in range(warmup + rounds):
            for name, fn in (("raw", raw), ("trainer", trainer_step)):
                start = time.perf_counter()
                fn()
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
        window.sums.read(collective=False)
    raw_best, trainer_best = min(times["raw"]), min(times["trainer"])
    return {"raw_ms": round(raw_best * 1000, 1), "trainer_ms": round(trainer_best * 1000, 1),
            "trainer_overhead": round(trainer_best / raw_best - 1, 4),
            "trainer_overhead_median": round(statistics.median(times["trainer"])
                                             / statistics.median(times["raw"]) - 1, 4)}


if __name__ == "__main__":
    _replay_main(json.loads(sys.argv[1]))
