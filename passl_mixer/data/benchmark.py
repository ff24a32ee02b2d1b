"""Measure data-loading throughput, on real images or on synthetic ImageNet-like JPEGs."""
from __future__ import annotations

import os
import resource
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from .loader import build_dataloader
from .sampler import DistributedBatchSampler


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


def transform_throughput(image_dir: str, transforms_cfg: Optional[List[Dict[str, Any]]],
                         num_images: int, seed: int = 0, start: int = 0,
                         device_normalize: bool = True) -> Dict[str, Any]:
    """Images per second one core makes: ``dataset[i]`` (read, decode, the per-sample
    transforms) in this process, no loader, for ``num_images`` samples from ``start`` on
    (cycling). With ``device_normalize`` the dataset leaves Normalize / RandomErasing to the
    device, as the loader has it do (see :mod:`.device`). This is the rate a worker process
    can reach on a core of its own."""
    cfg = dict(dataset=dict(name="ImageFolder", root=image_dir), transforms=transforms_cfg,
               batch_size=1, device_normalize=device_normalize)
    dataset = build_dataloader(cfg, train=True, seed=seed, world_size=1, rank=0).dataset
    dataset.set_epoch(1)
    dataset[start % len(dataset)]  # file cache and lazy imports, not timed
    begin, cpu_begin = time.perf_counter(), time.process_time()
    for i in range(num_images):
        dataset[(start + 1 + i) % len(dataset)]
    seconds, cpu_seconds = time.perf_counter() - begin, time.process_time() - cpu_begin
    # img_per_cpu_s: the same rate per CPU-second used, which other processes on a shared
    # machine do not change (they do change the wall-clock img_per_s)
    return dict(img_per_s=num_images / seconds, img_per_cpu_s=num_images / cpu_seconds,
                images=num_images, seconds=seconds)


def loader_throughput(image_dir: str, transforms_cfg: Optional[List[Dict[str, Any]]],
                      batch_size: int, num_workers: int, num_batches: int,
                      seed: int = 0, device_stage: bool = True) -> Dict[str, Any]:
    """Time ``num_batches`` training batches from an ImageFolder at ``image_dir``.

    The first batch (worker start-up, file cache) is timed separately as ``first_batch_s`` and
    not counted; ``img_per_s`` is over the ``num_batches`` batches after it, cycling epochs if
    the folder holds fewer. Single process, shuffled, ``drop_last`` as in training.

    ``device_stage=False`` times the loader up to the uint8 batch tensors and leaves out the
    cast / Normalize / RandomErasing batch stage: on a GPU that stage is the device's work, but
    on a machine without one it would run on the very cores that the workers are timed on.
    """
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches!r}.")
    cfg = dict(dataset=dict(name="ImageFolder", root=image_dir), transforms=transforms_cfg,
               batch_size=batch_size, num_workers=num_workers)
    loader = build_dataloader(cfg, train=True, seed=seed, world_size=1, rank=0)
    # Epochs of no more images than the timing needs: the loop below runs whole epochs (ending
    # workers mid-epoch would waste the batches they have in flight), and a real training set
    # has a million images.
    loader.batch_sampler = DistributedBatchSampler(
        min(len(loader.dataset), (num_batches + 1) * batch_size), batch_size, num_replicas=1,
        rank=0, shuffle=True, seed=seed, drop_last=True)
    if not device_stage:
        loader.device_stages = None  # batches stay the workers' uint8 arrays, as tensors
    children_begin = _children_cpu_s()
    start = time.perf_counter()
    first_batch_s = seconds = None
    images = made = 0  # timed images; all images the loader made
    epoch = 0
    while seconds is None:
        loader.set_epoch(epoch)
        # Whole epochs: stopping mid-epoch would end the workers with batches made in vain.
        for batch_images, _ in loader:
            made += batch_images.shape[0]
            if first_batch_s is None:
                first_batch_s = time.perf_counter() - start
                start, main_cpu_begin = time.perf_counter(), time.process_time()
            elif seconds is None:
                images += batch_images.shape[0]
                if images >= num_batches * batch_size:
                    seconds = time.perf_counter() - start
                    main_cpu_s = time.process_time() - main_cpu_begin
        epoch += 1
    loader.close()  # joins the workers: their CPU time is then counted as the children's
    worker_cpu_s = _children_cpu_s() - children_begin
    # Per CPU-second of the workers, over every batch they made (start-up included): what a
    # worker makes per core-second of its own, comparable to transform_throughput's
    # img_per_cpu_s whatever else runs on the machine.
    worker_img_per_cpu_s = made / worker_cpu_s if worker_cpu_s > 0 else None
    return dict(img_per_s=images / seconds if seconds > 0 else float("inf"), images=images,
                main_cpu_s_per_image=main_cpu_s / images, worker_img_per_cpu_s=worker_img_per_cpu_s,
                batches=num_batches, seconds=seconds, first_batch_s=first_batch_s,
                batch_size=batch_size, num_workers=num_workers,
                dataset_size=len(loader.dataset), epoch_size=len(loader.batch_sampler) * batch_size)


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of this process's finished child processes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
