"""Data-loading throughput: decode + training transforms + batching over a folder of JPEGs.

    python tools/benchmark.py --mode data                       # writes synthetic JPEGs first
    python tools/benchmark.py --mode data --image-dir data/ILSVRC2012/train --num-workers 8
    python tools/benchmark.py --mode data --compare before=/tmp/ead863c \\
        --compare after=$PWD --compare simd=/opt/pillow-simd:$PWD   # per-core rates only

Per round, interleaved (the machine may be shared): the per-core rate, then the loader with each
``--num-workers``. The per-core rate is what one worker makes on a core of its own: a process of
its own (``data_child.py``) runs ``dataset[i]`` of a dataset built as the loader's, on exactly
the samples the round's loader makes (:func:`~passl_mixer.data.timed_batches`), timed in
wall-clock and CPU seconds. The loader's efficiency with N workers is its rate / (N x the
per-core rate of the same round): the share of N cores' work that reaches the training loop.
Medians over the rounds are reported. On a shared machine the wall-clock figures move with the
other processes' load; the CPU-time figures (images per CPU-second of a worker vs of the
per-core process, and the main process's CPU-ms per image) do not.

``--compare NAME=PYTHONPATH`` (repeatable) times instead the per-core rate of each named
PYTHONPATH (which passl_mixer and which Pillow it imports: a checkout of an older commit, a
directory with Pillow-SIMD installed ahead of this checkout), each in its own process, in the
same rounds (the order rotating), on the same samples, and reports each one's images per
CPU-second with its Pillow build, and its ratio to the first one's within each round.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
from typing import List, Optional, Tuple

from .child import TimedChild

DEFAULT_TRANSFORMS = "configs/_base_/datasets/imagenet.yaml"
PER_CORE_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data_child.py")


def add_args(parser):
    parser.add_argument("--image-dir", default=None,
                        help="class-folder images; default: synthetic 500x375 JPEGs in a temp dir")
    parser.add_argument("--num-images", type=int, default=256, help="synthetic images to write")
    parser.add_argument("-c", "--config", default=None,
                        help=f"take data.train.transforms from this config "
                             f"(default: the ImageNet recipe in {DEFAULT_TRANSFORMS})")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--num-batches", type=int, default=6,
                        help="timed batches per measurement (after one untimed batch)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds (per-core rate, then each --num-workers)")
    parser.add_argument("--device-stage", choices=["auto", "run", "skip"], default="auto",
                        help="time the batch stage (uint8 -> float32, Normalize, "
                             "RandomErasing) that the loader runs on the training device; "
                             "auto: only with a GPU (without one it would run on the cores the "
                             "workers are timed on)")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=PYTHONPATH",
                        help="time the per-core rate of the passl_mixer and Pillow that this "
                             "PYTHONPATH imports, as NAME, in a process of its own, in the same "
                             "rounds as the others; repeatable, the first is the reference of "
                             "the ratios. The loader is not timed then")


def parse_compare(specs: List[str]) -> List[Tuple[str, Optional[str]]]:
    """``NAME=PYTHONPATH`` strings as (name, pythonpath); none: this checkout alone."""
    sides = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not (sep and name and path):
            raise SystemExit(f"--compare takes NAME=PYTHONPATH, got {spec!r}.")
        missing = [p for p in path.split(os.pathsep) if p and not os.path.isdir(p)]
        if missing:
            raise SystemExit(f"--compare {spec}: {missing[0]!r} is not a directory; each "
                              f"PYTHONPATH entry must be a checkout or a site directory.")
        sides.append((name, path))
    return sides or [("this checkout", None)]


def describe_side(name: str, first: dict) -> str:
    pillow = first["pillow"]
    return (f"{name}: passl_mixer {first['passl_mixer']}, {pillow['name']} {pillow['version']}"
            f"{' (SIMD)' if pillow['simd'] else ''}, {pillow['jpeg']}")


def run(args) -> dict:
    import paddle

    from ..config import load_config
    from ..data import build_dataloader, loader_throughput, timed_batches, write_synthetic_jpegs

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg_path = args.config or os.path.join(root, DEFAULT_TRANSFORMS)
    transforms = load_config(cfg_path)["data"]["train"]["transforms"]
    sides = parse_compare(args.compare)
    comparing = bool(args.compare)
    num_workers = [] if comparing else args.num_workers
    device_stage = args.device_stage == "run" or (
        args.device_stage == "auto" and paddle.device.is_compiled_with_cuda()
        and paddle.device.cuda.device_count() > 0)
    print(f"data: batch {args.batch_size}, {args.num_batches} timed batches, {args.rounds} "
          f"round(s), device batch stage "
          f"{'timed' if device_stage else 'not timed (no GPU: it is the device work)'}; "
          f"{os.cpu_count()} core(s)" + ("; --compare: per-core rates only" if comparing else ""))
    per_core = {name: [] for name, _ in sides}      # wall-clock img/s, per round
    per_core_cpu = {name: [] for name, _ in sides}  # img per CPU-second, per round
    rates = {n: [] for n in num_workers}
    efficiency = {n: [] for n in num_workers if n > 0}
    cpu_efficiency = {n: [] for n in num_workers if n > 0}
    main_cpu = {n: [] for n in num_workers if n > 0}
    firsts = {}
    with tempfile.TemporaryDirectory() as tmp:
        image_dir = args.image_dir
        if image_dir is None:
            image_dir = os.path.join(tmp, "images")
            write_synthetic_jpegs(image_dir, args.num_images)
        loader_cfg = dict(dataset=dict(name="ImageFolder", root=os.path.abspath(image_dir)),
                          transforms=transforms, batch_size=args.batch_size)
        # built here first: a bad folder or too few images stops with this checkout's error,
        # not as a child's traceback
        build_dataloader(loader_cfg, train=True, seed=0, world_size=1, rank=0)
        arg = dict(loader_cfg=loader_cfg, seed=0)
        children = []
        try:
            for name, pythonpath in sides:
                children.append(TimedChild(name, PER_CORE_CHILD, arg, threads=1, log_dir=tmp,
                                           pythonpath=pythonpath))
                firsts[name] = json.loads(children[-1].first)
                print(describe_side(name, firsts[name]))
            num_samples = firsts[sides[0][0]]["num_samples"]
            for r in range(args.rounds):
                # Round r: epoch r of seed 0, the same samples for every side and loader
                batches = json.dumps(timed_batches(num_samples, args.batch_size,
                                                   args.num_batches, seed=0, epoch=r))
                line = []
                for child in children[r % len(children):] + children[:r % len(children)]:
                    measured = json.loads(child.ask(batches))
                    per_core[child.name].append(measured["images"] / measured["wall_s"])
                    per_core_cpu[child.name].append(measured["images"] / measured["cpu_s"])
                for name, _ in sides:
                    line.append(f"{name + ' ' if comparing else ''}per core "
                                f"{per_core[name][-1]:.1f} ({per_core_cpu[name][-1]:.1f} per "
                                f"CPU-s)")
                core, core_cpu = per_core[sides[0][0]][-1], per_core_cpu[sides[0][0]][-1]
                for name, _ in sides[1:]:
                    line.append(f"{name} / {sides[0][0]} x{per_core_cpu[name][-1] / core_cpu:.2f}")
                for workers in num_workers:
                    loaded = loader_throughput(image_dir, transforms, args.batch_size, workers,
                                               args.num_batches, seed=0,
                                               device_stage=device_stage, epoch=r)
                    rate = loaded["img_per_s"]
                    rates[workers].append(rate)
                    line.append(f"{workers} worker(s) {rate:.1f}")
                    if workers > 0:
                        efficiency[workers].append(rate / (workers * core))
                        cpu_efficiency[workers].append(loaded["worker_img_per_cpu_s"] / core_cpu)
                        main_cpu[workers].append(loaded["main_cpu_s_per_image"] * 1e3)
                print(f"round {r + 1}: img/s " + ", ".join(line))
        finally:
            for child in children:
                child.close()
    median = statistics.median
    summary = []
    reference = per_core_cpu[sides[0][0]]
    for name, pythonpath in sides:
        entry = {"name": name, "pythonpath": pythonpath, "pillow": firsts[name]["pillow"],
                 "passl_mixer": firsts[name]["passl_mixer"],
                 "img_per_s": round(median(per_core[name]), 1),
                 "img_per_cpu_s": round(median(per_core_cpu[name]), 1)}
        text = (f"data: {name + ': ' if comparing else ''}per core {entry['img_per_s']:.1f} "
                f"img/s, {entry['img_per_cpu_s']:.1f} img per CPU-second (median of "
                f"{args.rounds})")
        if name != sides[0][0]:
            ratios = [a / b for a, b in zip(per_core_cpu[name], reference)]
            entry["ratio"] = round(median(ratios), 3)
            entry["ratio_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
            text += (f"; x{entry['ratio']:.2f} the per-CPU-second rate of {sides[0][0]} (median "
                     f"of the per-round ratios, {min(ratios):.2f}-{max(ratios):.2f})")
        print(text)
        summary.append(entry)
    results = []
    for workers in num_workers:
        entry = {"num_workers": workers, "img_per_s": round(median(rates[workers]), 1)}
        text = f"data: {entry['img_per_s']:.1f} img/s with {workers} worker(s)"
        if workers > 0:
            entry["efficiency"] = round(median(efficiency[workers]), 3)
            entry["cpu_efficiency"] = round(median(cpu_efficiency[workers]), 3)
            entry["main_cpu_ms_per_image"] = round(median(main_cpu[workers]), 3)
            text += (f", efficiency {entry['efficiency']:.0%} of {workers} x the per-core rate "
                     f"(median of per-round ratios); per CPU-second a worker makes "
                     f"{entry['cpu_efficiency']:.0%} of what the per-core process makes; the "
                     f"main process spends {entry['main_cpu_ms_per_image']:.2f} CPU-ms per image")
        print(text)
        results.append(entry)
    return {"image_dir": args.image_dir or f"synthetic 500x375 JPEGs x {args.num_images}",
            "transforms_from": os.path.relpath(cfg_path, root), "batch_size": args.batch_size,
            "num_batches": args.num_batches, "rounds": args.rounds,
            "device_stage_timed": device_stage,
            "per_core_img_per_s": summary[0]["img_per_s"],
            "per_core_img_per_cpu_s": summary[0]["img_per_cpu_s"], "per_core": summary,
            "results": results}
