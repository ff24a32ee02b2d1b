"""Data pipeline: datasets, transforms, the distributed batch sampler, loaders and Mixup.

Importing this package registers the datasets (``DATASETS``) and transforms (``TRANSFORMS``).
"""
from .benchmark import loader_throughput, timed_batches, write_synthetic_jpegs
from .datasets import IMG_EXTENSIONS, ImageFolder, ImageList, list_images, load_rgb, to_rgb
from .loader import Loader, build_dataloader
from .mixup import Mixup
from .randaugment import RandAugment  # importing it registers it in TRANSFORMS
from .sampler import DistributedBatchSampler
from .transforms import (INTERPOLATIONS, CenterCrop, Compose, Normalize, RandomErasing,
                         RandomHorizontalFlip, RandomResizedCrop, Resize, ResizeForEval,
                         build_transforms, interpolation_mode)

__all__ = [
    "IMG_EXTENSIONS", "INTERPOLATIONS", "CenterCrop", "Compose", "DistributedBatchSampler",
    "ImageFolder", "ImageList", "Loader", "Mixup", "Normalize", "RandAugment", "RandomErasing",
    "RandomHorizontalFlip", "RandomResizedCrop", "Resize", "ResizeForEval", "build_dataloader",
    "build_transforms", "interpolation_mode", "list_images", "load_rgb", "loader_throughput",
    "timed_batches", "to_rgb", "write_synthetic_jpegs",
]
from . import views  # noqa: F401  (registers multi-view data)
