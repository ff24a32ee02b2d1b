"""Measure data-loading throughput, on real images or on synthetic ImageNet-like JPEGs.

The per-core rate (what one worker makes on a core of its own) is timed by the data benchmark
in a process of its own (``passl_mixer/benchmarks/data_child.py``), on the samples
:func:`timed_batches` names: the ones :func:`loader_throughput` makes with the same arguments.
"""
from __future__ import annotations

import os
import resource
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

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


def _timing_sampler(num_samples: int, batch_size: int, num_batches: int,
                    seed: int) -> DistributedBatchSampler:
    """The shuffled training sampler of the timing, over epochs of no more images than it needs:
    the timing runs whole epochs (ending workers mid-epoch would waste the batches they have in
    flight), and a real training set has a million images."""
    return DistributedBatchSampler(min(num_samples, (num_batches + 1) * batch_size), batch_size,
                                   num_replicas=1, rank=0, shuffle=True, seed=seed,
                                   drop_last=True)


def timed_batches(num_samples: int, batch_size: int, num_batches: int, seed: int = 0,
                  epoch: int = 0) -> List[Tuple[int, List[int]]]:
    """``(epoch, sample indices)`` of the batches :func:`loader_throughput` makes with these
    arguments, in order: its untimed first batch, then the ``num_batches`` timed ones. The
    per-core rate of the data benchmark is timed on exactly these samples (``dataset[i]`` of a
    dataset built as the loader's, ``set_epoch`` as the loader sets it)."""
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches!r}.")
    sampler = _timing_sampler(num_samples, batch_size, num_batches, seed)
    batches: List[Tuple[int, List[int]]] = []
    while len(batches) < num_batches + 1:
        sampler.set_epoch(epoch)
        batches.extend((epoch, [int(i) for i in indices]) for indices in sampler)
        epoch += 1
    return batches[:num_batches + 1]


def loader_throughput(image_dir: str, transforms_cfg: Optional[List[Dict[str, Any]]],
                      batch_size: int, num_workers: int, num_batches: int,
                      seed: int = 0, device_stage: bool = True,
                      epoch: int = 0) -> Dict[str, Any]:
    """Time ``num_batches`` training batches from an ImageFolder at ``image_dir``, from epoch
    ``epoch`` on (the samples: :func:`timed_batches`).

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
    loader.batch_sampler = _timing_sampler(len(loader.dataset), batch_size, num_batches, seed)
    if not device_stage:
        loader.device_stages = None  # batches stay the workers' uint8 arrays, as tensors
    children_begin = _children_cpu_s()
    start = time.perf_counter()
    first_batch_s = seconds = None
    images = made = 0  # timed images; all images the loader made
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
    # worker makes per core-second of its own, comparable to the per-core rate per
    # CPU-second (see the module doc) whatever else runs on the machine.
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
