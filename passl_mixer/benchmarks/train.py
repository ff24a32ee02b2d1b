"""Training throughput on synthetic inputs: forward + backward + optimizer step, no data loading.

    python tools/benchmark.py --mode train -c configs/mlp_mixer/mixer_s16_224.yaml --batch-size 32
"""
from __future__ import annotations

import resource
import time

import numpy as np


def add_args(parser):
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("-o", "--override", action="append", default=[])
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: the config's data.train.batch_size")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")


def run(args) -> dict:
    import paddle

    from ..cli import current_threads
    from ..config import load_config
    from ..models.info import classifier_macs
    from ..optim import build_optimizer
    from ..registry import build_model

    cfg = load_config(args.config, args.override)
    batch = args.batch_size or cfg["data"]["train"]["batch_size"]
    paddle.seed(0)
    model = build_model(cfg["model"])
    model.train()
    bb = model.backbone
    optimizer, _ = build_optimizer(cfg["optimizer"], cfg.get("lr_scheduler"), model,
                                   total_steps=10_000, steps_per_epoch=1000)
    images = paddle.randn([batch, bb.in_channels, *bb.img_size])
    labels = paddle.to_tensor(np.arange(batch) % model.num_classes, dtype="int64")

    def step():
        loss = model(images, labels)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        return float(loss)  # waits for the step to finish

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    # backward costs about twice the forward: 3 x forward FLOPs (2 FLOPs per MAC) per image
    macs = classifier_macs(model)
    result = {
        "config": args.config, "batch_size": batch, "img_size": list(bb.img_size),
        "threads": current_threads(), "paddle": paddle.__version__,
        "device": paddle.device.get_device(),
        "ms_per_step": round(seconds * 1000, 1), "img_per_s": round(batch / seconds, 1),
        "train_gflop_per_s": round(3 * 2 * macs * batch / seconds / 1e9, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(f"train: {result['img_per_s']} img/s ({result['ms_per_step']} ms/step, batch {batch}, "
          f"{result['train_gflop_per_s']} GFLOP/s) on {result['device']} with "
          f"{result['threads']} threads")
    return result
