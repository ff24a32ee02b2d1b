"""Data-loading throughput: decode + training transforms + batching over a folder of JPEGs.

    python tools/benchmark.py --mode data                       # writes synthetic JPEGs first
    python tools/benchmark.py --mode data --image-dir data/ILSVRC2012/train --num-workers 8
"""
from __future__ import annotations

import os
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


def run(args) -> dict:
    from ..config import load_config
    from ..data import loader_throughput, write_synthetic_jpegs

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg_path = args.config or os.path.join(root, DEFAULT_TRANSFORMS)
    transforms = load_config(cfg_path)["data"]["train"]["transforms"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        image_dir = args.image_dir
        if image_dir is None:
            image_dir = os.path.join(tmp, "images")
            write_synthetic_jpegs(image_dir, args.num_images)
        for workers in args.num_workers:
            r = loader_throughput(image_dir, transforms, args.batch_size, workers, args.num_batches)
            print(f"data: {r['img_per_s']:.1f} img/s with {workers} worker(s), batch "
                  f"{args.batch_size} ({r['images']} images timed)")
            results.append({"num_workers": workers, "img_per_s": round(r["img_per_s"], 1)})
    return {"image_dir": args.image_dir or f"synthetic 500x375 JPEGs x {args.num_images}",
            "transforms_from": os.path.relpath(cfg_path, root), "batch_size": args.batch_size,
            "results": results}
