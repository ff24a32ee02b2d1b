"""Measure data-loading throughput, on real images or on synthetic ImageNet-like JPEGs."""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from .loader import build_dataloader


def write_synthetic_jpegs(out_dir: str, n: int, size: Sequence[int] = (375, 500),
                          num_classes: int = 10, seed: int = 0) -> List[str]:
    """Write ``n`` JPEGs of ``size`` (height, width) as ``out_dir/class_XXX/img_XXXXXX.JPEG``.

    The images are smooth color fields (upsampled coarse noise plus a gradient) with mild
    pixel noise, saved at quality 90: about the size and decoding cost of an ImageNet photo
    (500x375 is ImageNet's most common size), unlike flat or pure-noise images. Image i goes
    to class ``i % num_classes`` and depends only on (seed, i). Returns the paths, in order.
    """
    height, width = int(size[0]), int(size[1])
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        coarse = rng.uniform(0, 255, size=(6, 8, 3)).astype(np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC),
                           dtype=np.float32)
        direction = rng.uniform(-1, 1, size=2)
        gradient = (ys / height * direction[0] + xs / width * direction[1]) * 60.0
        pixels = field + gradient[..., None] + rng.normal(0, 6, size=field.shape)
        class_dir = os.path.join(out_dir, f"class_{i % num_classes:03d}")
        os.makedirs(class_dir, exist_ok=True)
        path = os.path.join(class_dir, f"img_{i:06d}.JPEG")
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def loader_throughput(image_dir: str, transforms_cfg: Optional[List[Dict[str, Any]]],
                      batch_size: int, num_workers: int, num_batches: int,
                      seed: int = 0) -> Dict[str, Any]:
    """Time ``num_batches`` training batches from an ImageFolder at ``image_dir``.

    The first batch (worker start-up, file cache) is timed separately as ``first_batch_s`` and
    not counted; ``img_per_s`` is over the ``num_batches`` batches after it, cycling epochs if
    the folder holds fewer. Single process, shuffled, ``drop_last`` as in training.
    """
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches!r}.")
    cfg = dict(dataset=dict(name="ImageFolder", root=image_dir), transforms=transforms_cfg,
               batch_size=batch_size, num_workers=num_workers)
    loader = build_dataloader(cfg, train=True, seed=seed, world_size=1, rank=0)
    start = time.perf_counter()
    first_batch_s = None
    images = 0
    epoch = 0
    while first_batch_s is None or images < num_batches * batch_size:
        loader.set_epoch(epoch)
        for batch_images, _ in loader:
            if first_batch_s is None:
                first_batch_s = time.perf_counter() - start
                start = time.perf_counter()
                continue
            images += batch_images.shape[0]
            if images >= num_batches * batch_size:
                break
        epoch += 1
    seconds = time.perf_counter() - start
    return dict(img_per_s=images / seconds if seconds > 0 else float("inf"), images=images,
                batches=num_batches, seconds=seconds, first_batch_s=first_batch_s,
                batch_size=batch_size, num_workers=num_workers,
                dataset_size=len(loader.dataset))
