"""Multi-view data for self-supervised learning, and the augmentations its recipes need.

:class:`MultiView` wraps any registered dataset and returns several differently augmented
views of each image, each view with its own transform list:

    data:
      train:
        dataset:
          name: MultiView
          dataset: {name: ImageFolder, root: data/ILSVRC2012/train}
          views:                      # one transform list per view
            - [{name: RandomResizedCrop, size: 224}, {name: GaussianBlur, prob: 1.0}, ...]
            - [{name: RandomResizedCrop, size: 224}, {name: Solarize, prob: 0.2}, ...]
        batch_size: 128

A batch from the loader is then ``[views, labels]``: ``views`` a list of float32 [B, 3, H, W]
tensors (one per view, the same images in the same order) and ``labels`` int64 [B], which SSL
models ignore. View v of sample i in epoch e is drawn from
``numpy.random.default_rng([seed, e, i, v])``, so it depends on nothing else.

The transforms follow the ``t(img, rng)`` API of :mod:`.transforms` and work on PIL RGB images
(put them before ``Normalize``). Each applies with probability ``prob``, as in the BYOL / MoCo v3
recipes: ColorJitter (p 0.8), RandomGrayscale (p 0.2), GaussianBlur (p 1.0 / 0.1), Solarize
(p 0.0 / 0.2).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import paddle
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from ..errors import ConfigError
from ..registry import DATASETS, TRANSFORMS
from .transforms import (RandomApply, build_transforms, check_range, pil_to_chw,
                         sample_error, sample_path)



@TRANSFORMS.register()
class ColorJitter(RandomApply):
    """With probability ``prob``, change brightness, contrast, saturation and hue, in a random
    order, each by a factor drawn uniformly (torchvision's ColorJitter, applied at random).

    ``brightness`` b draws a factor in [max(0, 1 - b), 1 + b] (likewise contrast, saturation);
    ``hue`` h shifts the hue by a fraction of the colour circle in [-h, h] (h <= 0.5).
    """

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.2,
                 hue: float = 0.1, prob: float = 0.8):
        if min(brightness, contrast, saturation, hue) < 0 or hue > 0.5:
            raise ConfigError(f"ColorJitter: brightness, contrast, saturation must be >= 0 and hue "
                              f"in [0, 0.5], got {brightness}, {contrast}, {saturation}, {hue}.")
        self.brightness, self.contrast, self.saturation, self.hue = \
            brightness, contrast, saturation, hue
        super().__init__(prob)

    @staticmethod
    def _shift_hue(img: Image.Image, shift: float) -> Image.Image:
        h, s, v = img.convert("HSV").split()
        h = h.point(lambda x: (x + int(round(shift * 255))) % 256)
        return Image.merge("HSV", (h, s, v)).convert("RGB")

    def apply(self, img, rng):
        enhancers = [(ImageEnhance.Brightness, self.brightness),
                     (ImageEnhance.Contrast, self.contrast),
                     (ImageEnhance.Color, self.saturation)]
        for k in rng.permutation(4):  # 0-2: the enhancers above, 3: hue
            if k < 3 and enhancers[k][1] > 0:
                enhancer, strength = enhancers[k]
                img = enhancer(img).enhance(rng.uniform(max(0.0, 1 - strength), 1 + strength))
            elif k == 3 and self.hue > 0:
                img = self._shift_hue(img, rng.uniform(-self.hue, self.hue))
        return img

    def __repr__(self) -> str:
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue}, prob={self.prob})")


@TRANSFORMS.register()
class RandomGrayscale(RandomApply):
    """With probability ``prob``, replace the colours by their luma (kept as 3 channels)."""

    def __init__(self, prob: float = 0.2):
        super().__init__(prob)

    def apply(self, img, rng):
        return img.convert("L").convert("RGB")

    def __repr__(self) -> str:
        return f"RandomGrayscale(prob={self.prob})"


@TRANSFORMS.register()
class GaussianBlur(RandomApply):
    """With probability ``prob``, blur with a Gaussian whose standard deviation (in pixels) is
    drawn uniformly from ``sigma``. BYOL's 23-pixel kernel on 224-pixel crops covers the whole
    Gaussian for its sigma range [0.1, 2.0], so PIL's untruncated blur matches it."""

    def __init__(self, sigma: Sequence[float] = (0.1, 2.0), prob: float = 0.5):
        self.sigma = check_range(sigma, "GaussianBlur sigma")
        super().__init__(prob)

    def apply(self, img, rng):
        return img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(*self.sigma)))

    def __repr__(self) -> str:
        return f"GaussianBlur(sigma={list(self.sigma)}, prob={self.prob})"


@TRANSFORMS.register()
class Solarize(RandomApply):
    """With probability ``prob``, invert every pixel value >= ``threshold`` (0..255)."""

    def __init__(self, threshold: int = 128, prob: float = 0.2):
        if not 0 <= threshold <= 256:
            raise ConfigError(f"Solarize: threshold must be in [0, 256], got {threshold!r}.")
        self.threshold = int(threshold)
        super().__init__(prob)

    def apply(self, img, rng):
        return ImageOps.solarize(img, self.threshold)

    def __repr__(self) -> str:
        return f"Solarize(threshold={self.threshold}, prob={self.prob})"


@DATASETS.register()
class MultiView(paddle.io.Dataset):
    """``(list of view arrays, label)`` samples from a wrapped dataset (see the module doc).

    Args:
        dataset: the wrapped dataset's config, e.g. ``{name: ImageFolder, root: ...}``, without
            transforms (each view has its own).
        views: one transform list per view; at least two.
        transforms: must be empty; the loader passes the data section's ``transforms`` here.
        seed: the run's seed (the loader passes it).
    """

    def __init__(self, dataset: Dict[str, Any], views: List[List[Dict[str, Any]]],
                 transforms: Optional[List[Dict[str, Any]]] = None, seed: int = 0):
        if transforms:
            raise ConfigError("With a MultiView dataset, give each view's transforms in "
                              "dataset.views and leave the data section's 'transforms' out.")
        if isinstance(dataset, dict) and ("transforms" in dataset or "seed" in dataset):
            raise ConfigError("MultiView: the wrapped dataset must not set 'transforms' or "
                              "'seed'; each view's transforms go in dataset.views.")
        if not (isinstance(views, (list, tuple)) and len(views) >= 2):
            raise ConfigError(f"MultiView: views must be a list of at least two transform lists "
                              f"(one per view), got {views!r}.")
        # The wrapped dataset decodes the image once; its raw 0..255 array is augmented per view.
        self.dataset = DATASETS.build(dataset, transforms=None, seed=seed)
        if hasattr(self.dataset, "output_dtype"):  # skip a float32 round trip of the raw image
            self.dataset.output_dtype = np.uint8
        self.views = [build_transforms(v) for v in views]
        self.seed = int(seed)
        self.epoch = 0
        self.output_dtype = np.float32  # uint8 after split_for_device

    def split_for_device(self) -> List[List[Any]]:
        """Leave each view's Normalize / RandomErasing tail to the loader's device stage (see
        :mod:`.device`); views are uint8 (3, H, W) arrays from now on. Returns the tails, one
        per view."""
        from .device import split_batch_tail

        tails = []
        for v, pipeline in enumerate(self.views):
            self.views[v], tail = split_batch_tail(pipeline)
            tails.append(tail)
        self.output_dtype = np.uint8
        return tails

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int):
        idx = int(idx)
        # (3, H, W) holding whole values 0..255; the wrapped dataset names a failure
        raw, label = self.dataset[idx]
        img = Image.fromarray(np.ascontiguousarray(raw.transpose(1, 2, 0).astype(np.uint8)), "RGB")
        out = []
        for v, transforms in enumerate(self.views):
            try:
                view = transforms(img, np.random.default_rng([self.seed, self.epoch, idx, v]))
            except Exception as exc:  # one message naming the sample, file, transform and view
                raise sample_error(idx, sample_path(self, idx), exc, view=v) from exc
            if isinstance(view, Image.Image):
                view = np.asarray(view, dtype=np.uint8).transpose(2, 0, 1) \
                    if self.output_dtype == np.uint8 else pil_to_chw(view)
            out.append(view)
        return out, label
