"""Does this Paddle train in bfloat16 on this CPU, and is it faster? Re-check on a new Paddle.

    python scripts/check_cpu_bf16_training.py                       # demo model, under a minute
    python scripts/check_cpu_bf16_training.py -c configs/mlp_mixer/mixer_s16_224.yaml \
        --batch-size 16 --steps 3 --rounds 2                        # the speed that matters

1. dygraph: ``paddle.amp.auto_cast(dtype='bfloat16')`` on CPU — the dtype of the logits (Paddle
   3.3.1: float32, with Paddle's warning that AMP "makes no effect" on CPUPlace).
2. the trainer's path (``passl_mixer.engine.amp.AutocastForward`` under ``paddle.jit.to_static``):
   the traced forward and backward programs' ops with a bfloat16 result, and the losses of a few
   SGD steps next to float32's from the same weights and batches.
3. the step time of float32 and bfloat16 (both traced), interleaved in rounds (f32 bf16 f32 ...)
   in this one process; the median of the steps after each program's first.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


PROGRAMS = ("float32", "bfloat16", "float32 dygraph")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", default="configs/demo/mixer_digits.yaml")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=6, help="steps per round and program")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--alone", choices=PROGRAMS, default=None,
                        help="time only this program, in this process (a process that has run "
                             "a oneDNN bfloat16 program runs the others slower afterwards)")
    args = parser.parse_args()

    from passl_mixer.cli import set_threads
    from passl_mixer.inference import keep_freed_memory
    set_threads(args.threads)
    keep_freed_memory()  # as tools/train.py does
    import paddle
    from passl_mixer.config import load_config
    from passl_mixer.engine.amp import AutocastForward
    from passl_mixer.registry import build_model

    paddle.set_device("cpu")
    cfg = load_config(args.config, [])
    batch = args.batch_size or cfg["data"]["train"]["batch_size"]
    paddle.seed(0)
    start = {k: v.clone() for k, v in build_model(cfg["model"]).state_dict().items()}
    rng = np.random.default_rng(0)

    def make(dtype):
        model = build_model(cfg["model"])
        model.set_state_dict(start)
        model.train()
        if dtype == "float32 dygraph":  # the default CPU training path (fused CPU kernels)
            return model, model, paddle.optimizer.SGD(0.05, parameters=model.parameters())
        forward = AutocastForward(model) if dtype == "bfloat16" else model
        return model, paddle.jit.to_static(forward, full_graph=True), paddle.optimizer.SGD(
            0.05, parameters=model.parameters())

    model, _, _ = make("float32")
    bb = model.backbone
    batches = [(paddle.to_tensor(rng.standard_normal((batch, bb.in_channels, *bb.img_size)),
                                 dtype="float32"),
                paddle.to_tensor(rng.integers(0, model.num_classes, batch), dtype="int64"))
               for _ in range(args.steps)]

    print(f"Paddle {paddle.__version__}, {args.config}, batch {batch}, "
          f"{paddle.get_flags(['FLAGS_enable_pir_api'])}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with paddle.amp.auto_cast(dtype="bfloat16"):
            logits = model(batches[0][0])
    said = "; ".join(str(w.message)[:110] for w in caught if "amp" in str(w.message).lower())
    print(f"1. dygraph auto_cast(bfloat16): logits {logits.dtype}" + (f" ({said})" if said else ""))

    runs = {dtype: make(dtype) for dtype in ([args.alone] if args.alone else PROGRAMS)}
    losses = {k: [] for k in runs}
    times = {k: [] for k in runs}
    for round_ in range(args.rounds):
        for dtype, (_, step_fn, opt) in runs.items():
            for i, (images, labels) in enumerate(batches):
                tic = time.perf_counter()
                loss = step_fn(images, labels)["loss"]
                loss.backward()
                opt.step()
                opt.clear_grad()
                value = float(loss)
                if round_ or i:
                    times[dtype].append(time.perf_counter() - tic)
                if not round_:
                    losses[dtype].append(value)

    median = {k: float(np.median(v)) for k, v in times.items()}
    if args.alone:
        print(f"3. {args.alone}: median step {median[args.alone]:.3f} s over "
              f"{len(times[args.alone])} steps, losses {np.round(losses[args.alone], 6).tolist()}")
        return
    program = runs["bfloat16"][1].forward.get_concrete_program(*batches[0])[1].train_program
    print("2. traced bfloat16 program (ops with a bf16 result):")
    for part in ("forward_program", "backward_program"):
        bf16_ops = collections.Counter(
            m.group(1) for line in str(getattr(program, part)).splitlines()
            if "bf16" in line.rsplit("->", 1)[-1]
            for m in [re.search(r'"((?:pd_op|onednn_op)\.\w+)"', line)] if m)
        print(f"   {part}: {dict(bf16_ops.most_common(8))}")
    for dtype in runs:
        print(f"   {dtype:15s} losses {np.round(losses[dtype], 6).tolist()}")
    diff = np.abs(np.array(losses["bfloat16"]) - np.array(losses["float32"])).max()
    print(f"   max |loss difference| {diff:.2e}")
    print(f"3. step time, median of {len(times['float32'])} interleaved steps each: float32 "
          f"{median['float32']:.3f} s, bfloat16 {median['bfloat16']:.3f} s (both traced), "
          f"bfloat16/float32 {median['bfloat16'] / median['float32']:.2f}; float32 dygraph "
          f"{median['float32 dygraph']:.3f} s, bfloat16 / float32 dygraph "
          f"{median['bfloat16'] / median['float32 dygraph']:.2f} (one process: --alone times "
          f"each in a process of its own)")


if __name__ == "__main__":
    main()
