"""Data-loading throughput: decode + training transforms + batching over a folder of JPEGs.

    python tools/benchmark.py --mode data                       # writes synthetic JPEGs first
    python tools/benchmark.py --mode data --image-dir data/ILSVRC2012/train --num-workers 8

Per round, interleaved (the machine may be shared): the per-core rate (``dataset[i]`` in this
process: what one worker makes on a core of its own), then the loader with each
``--num-workers``. The loader's efficiency with N workers is its rate / (N x the per-core rate
of the same round): the share of N cores' work that reaches the training loop. Medians over the
rounds are reported. On a shared machine the wall-clock figures move with the other processes'
load; the CPU-time figures (images per CPU-second of a worker vs of the single process, and the
main process's CPU-ms per image) do not.
"""
from __future__ import annotations

import os
import statistics
import tempfile

DEFAULT_TRANSFORMS = "configs/_base_/datasets/imagenet.yaml"


def add_args(parser):
    parser.add_argument("--image-dir", default=None,
                        help="class-folder images; default: synthetic 500x375 JPEGs in a temp dir")
    parser.add_argument("--num-images", type=int, default=256, help="synthetic images to write")
    parser.add_argument("-c", "--config", default=None,
                        help=f"take data.train.transforms from this config "
                             f"(default: the ImageNet recipe in {DEFAULT_TRANSFORMS})")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--num-batches", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds (per-core rate, then each --num-workers)")
    parser.add_argument("--device-stage", choices=["auto", "run", "skip"], default="auto",
                        help="time the batch stage (uint8 -> float32, Normalize, "
                             "RandomErasing) that the loader runs on the training device; "
                             "auto: only with a GPU (without one it would run on the cores the "
                             "workers are timed on)")


def run(args) -> dict:
    import paddle

    from ..config import load_config
    from ..data import loader_throughput, transform_throughput, write_synthetic_jpegs

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg_path = args.config or os.path.join(root, DEFAULT_TRANSFORMS)
    transforms = load_config(cfg_path)["data"]["train"]["transforms"]
    device_stage = args.device_stage == "run" or (
        args.device_stage == "auto" and paddle.device.is_compiled_with_cuda()
        and paddle.device.cuda.device_count() > 0)
    print(f"data: batch {args.batch_size}, {args.rounds} round(s), device batch stage "
          f"{'timed' if device_stage else 'not timed (no GPU: it is the device work)'}; "
          f"{os.cpu_count()} core(s)")
    per_core, per_core_cpu, rates = [], [], {n: [] for n in args.num_workers}
    efficiency = {n: [] for n in args.num_workers if n > 0}
    cpu_efficiency = {n: [] for n in args.num_workers if n > 0}
    main_cpu = {n: [] for n in args.num_workers if n > 0}
    with tempfile.TemporaryDirectory() as tmp:
        image_dir = args.image_dir
        if image_dir is None:
            image_dir = os.path.join(tmp, "images")
            write_synthetic_jpegs(image_dir, args.num_images)
        for r in range(args.rounds):
            measured = transform_throughput(image_dir, transforms, args.batch_size * 2,
                                            start=r * args.batch_size * 2)
            core = measured["img_per_s"]
            per_core.append(core)
            per_core_cpu.append(measured["img_per_cpu_s"])
            line = [f"per core {core:.1f} ({measured['img_per_cpu_s']:.1f} per CPU-s)"]
            for workers in args.num_workers:
                loaded = loader_throughput(image_dir, transforms, args.batch_size, workers,
                                           args.num_batches, seed=r, device_stage=device_stage)
                rate = loaded["img_per_s"]
                rates[workers].append(rate)
                line.append(f"{workers} worker(s) {rate:.1f}")
                if workers > 0:
                    efficiency[workers].append(rate / (workers * core))
                    cpu_efficiency[workers].append(loaded["worker_img_per_cpu_s"]
                                                   / measured["img_per_cpu_s"])
                    main_cpu[workers].append(loaded["main_cpu_s_per_image"] * 1e3)
            print(f"round {r + 1}: img/s " + ", ".join(line))
    median = statistics.median
    print(f"data: per core {median(per_core):.1f} img/s, {median(per_core_cpu):.1f} img per "
          f"CPU-second (median of {args.rounds})")
    results = []
    for workers in args.num_workers:
        entry = {"num_workers": workers, "img_per_s": round(median(rates[workers]), 1)}
        text = f"data: {entry['img_per_s']:.1f} img/s with {workers} worker(s)"
        if workers > 0:
            entry["efficiency"] = round(median(efficiency[workers]), 3)
            entry["cpu_efficiency"] = round(median(cpu_efficiency[workers]), 3)
            entry["main_cpu_ms_per_image"] = round(median(main_cpu[workers]), 3)
            text += (f", efficiency {entry['efficiency']:.0%} of {workers} x the per-core rate "
                     f"(median of per-round ratios); per CPU-second a worker makes "
                     f"{entry['cpu_efficiency']:.0%} of what the single process makes; the main "
                     f"process spends {entry['main_cpu_ms_per_image']:.2f} CPU-ms per image")
        print(text)
        results.append(entry)
    return {"image_dir": args.image_dir or f"synthetic 500x375 JPEGs x {args.num_images}",
            "transforms_from": os.path.relpath(cfg_path, root), "batch_size": args.batch_size,
            "rounds": args.rounds, "device_stage_timed": device_stage,
            "per_core_img_per_s": round(median(per_core), 1),
            "per_core_img_per_cpu_s": round(median(per_core_cpu), 1), "results": results}
