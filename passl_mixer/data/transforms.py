"""Image transforms, built from config dicts through the ``TRANSFORMS`` registry.

Every transform is called as ``t(img, rng)``: ``img`` is a PIL RGB image (or, after
:class:`Normalize`, a float32 CHW array) and ``rng`` is a ``numpy.random.Generator``. Random
transforms draw from ``rng`` only, never from Python's ``random`` or numpy's global state, so
the dataset can make augmentation a pure function of (seed, epoch, sample index).

Order in a pipeline: the PIL transforms (crops, resizes, flips, RandAugment) first, then
:class:`Normalize` (PIL -> float32 CHW array), then :class:`RandomErasing` (works on the array).
A transform given the wrong kind of input says so instead of failing deep inside PIL or numpy.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..registry import TRANSFORMS

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

Size = Union[int, Sequence[int]]


def interpolation_mode(name: str) -> Image.Resampling:
    """The PIL resampling filter called ``name``; an unknown name raises a ConfigError."""
    if name not in INTERPOLATIONS:
        raise ConfigError(f"Unknown interpolation '{name}'. "
                          f"Accepted names: {', '.join(INTERPOLATIONS)}.")
    return INTERPOLATIONS[name]


def _pair(size: Size, what: str) -> Tuple[int, int]:
    """``size`` as (height, width): an int means a square."""
    if isinstance(size, int) and size > 0:
        return size, size
    if (isinstance(size, (list, tuple)) and len(size) == 2
            and all(isinstance(s, int) and s > 0 for s in size)):
        return int(size[0]), int(size[1])
    raise ConfigError(f"{what}: size must be a positive int or [height, width], got {size!r}.")


def check_range(value: Sequence[float], what: str) -> Tuple[float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and value[0] <= value[1]):
        raise ConfigError(f"{what} must be [low, high] with low <= high, got {value!r}.")
    return float(value[0]), float(value[1])


def check_prob(value: float, what: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{what}: prob must be in [0, 1], got {value!r}.")
    return float(value)


def require_pil(img: Any, what: str) -> None:
    if not isinstance(img, Image.Image):
        raise ConfigError(f"{what} works on PIL images, but got {type(img).__name__}: put it "
                          f"before Normalize in the transforms list.")


class RandomApply:
    """Base of the PIL transforms applied to an image with probability ``prob``: one draw from
    ``rng`` per image decides, and the subclass's ``apply(img, rng)`` does the change."""

    def __init__(self, prob: float):
        self.prob = check_prob(prob, type(self).__name__)

    def __call__(self, img, rng):
        require_pil(img, type(self).__name__)
        if rng.random() >= self.prob:
            return img
        return self.apply(img, rng)

    def apply(self, img: Image.Image, rng) -> Image.Image:
        raise NotImplementedError


def pil_to_chw(img: Image.Image) -> np.ndarray:
    """An RGB PIL image as a float32 (3, H, W) array with the raw 0..255 values."""
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1)


class Compose:
    """Apply transforms in order, passing the same generator to each."""

    def __init__(self, transforms: List[Any]):
        self.transforms = list(transforms)

    def __call__(self, img, rng: np.random.Generator):
        for t in self.transforms:
            img = t(img, rng)
        return img

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def build_transforms(cfgs: Optional[List[Dict[str, Any]]]) -> Compose:
    """Build a :class:`Compose` from a list of ``{name: ..., **kwargs}`` dicts (None: empty)."""
    if cfgs is None:
        return Compose([])
    if not isinstance(cfgs, (list, tuple)):
        raise ConfigError(f"transforms must be a list of {{name: ...}} mappings, "
                          f"got {type(cfgs).__name__}: {cfgs!r}.")
    return Compose([TRANSFORMS.build(cfg) for cfg in cfgs])


@TRANSFORMS.register()
class RandomResizedCrop:
    """Crop a random area fraction (``scale``) and aspect ratio (``ratio``), resize to ``size``.

    The Inception-style crop as torchvision/timm do it: 10 tries to find a box that fits, else a
    center crop with the ratio clamped into ``ratio``.
    """

    def __init__(self, size: Size, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), interpolation: str = "bicubic"):
        self.size = _pair(size, "RandomResizedCrop")
        self.scale = check_range(scale, "RandomResizedCrop scale")
        self.ratio = check_range(ratio, "RandomResizedCrop ratio")
        self.interpolation = interpolation
        self._resample = interpolation_mode(interpolation)

    def crop_box(self, width: int, height: int, rng: np.random.Generator):
        """(left, top, right, bottom) of the crop for an image of this size."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return left, top, left + w, top + h
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            w, h = int(round(height * self.ratio[1])), height
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
        return left, top, left + w, top + h

    def __call__(self, img, rng):
        require_pil(img, "RandomResizedCrop")
        box = self.crop_box(img.width, img.height, rng)
        # resize(box=...) crops and resizes in one pass.
        return img.resize((self.size[1], self.size[0]), self._resample, box=box)

    def __repr__(self) -> str:
        return (f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
                f"interpolation={self.interpolation!r})")


@TRANSFORMS.register()
class RandomHorizontalFlip(RandomApply):
    """Mirror left-right with probability ``prob``."""

    def __init__(self, prob: float = 0.5):
        super().__init__(prob)

    def apply(self, img, rng):
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(prob={self.prob})"


@TRANSFORMS.register()
class Resize:
    """Resize: an int ``size`` sets the short side (aspect kept), ``[h, w]`` sets both."""

    def __init__(self, size: Size, interpolation: str = "bicubic"):
        self.short_side = isinstance(size, int)
        self.size = _pair(size, "Resize")
        self.interpolation = interpolation
        self._resample = interpolation_mode(interpolation)

    def output_size(self, width: int, height: int) -> Tuple[int, int]:
        """(width, height) after resizing an image of this size."""
        if not self.short_side:
            return self.size[1], self.size[0]
        short = self.size[0]
        if width <= height:
            return short, int(short * height / width)
        return int(short * width / height), short

    def __call__(self, img, rng):
        require_pil(img, "Resize")
        size = self.output_size(img.width, img.height)
        return img if size == img.size else img.resize(size, self._resample)

    def __repr__(self) -> str:
        size = self.size[0] if self.short_side else list(self.size)
        return f"Resize(size={size}, interpolation={self.interpolation!r})"


@TRANSFORMS.register()
class CenterCrop:
    """Crop the central ``size`` (int: square, or [h, w]); a smaller image is padded with black."""

    def __init__(self, size: Size):
        self.size = _pair(size, "CenterCrop")

    def __call__(self, img, rng):
        require_pil(img, "CenterCrop")
        h, w = self.size
        top = int(round((img.height - h) / 2))
        left = int(round((img.width - w) / 2))
        return img.crop((left, top, left + w, top + h))

    def __repr__(self) -> str:
        return f"CenterCrop(size={list(self.size)})"


@TRANSFORMS.register()
class ResizeForEval:
    """The evaluation resize: short side to ``int(img_size / crop_pct)``, then center crop.

    With the defaults, 224 -> short side 256 -> central 224x224 (timm's ``crop_pct=0.875``).
    It is :class:`Resize` followed by :class:`CenterCrop`, spelled with one ``crop_pct``.
    """

    def __init__(self, img_size: int, crop_pct: float = 0.875, interpolation: str = "bicubic"):
        if not 0 < crop_pct <= 1:
            raise ConfigError(f"ResizeForEval crop_pct must be in (0, 1], got {crop_pct!r}.")
        self.img_size = img_size
        self.crop_pct = crop_pct
        self.resize = Resize(int(img_size / crop_pct), interpolation)
        self.crop = CenterCrop(img_size)

    def __call__(self, img, rng):
        return self.crop(self.resize(img, rng), rng)

    def __repr__(self) -> str:
        return (f"ResizeForEval(img_size={self.img_size}, crop_pct={self.crop_pct}, "
                f"interpolation={self.resize.interpolation!r})")


@TRANSFORMS.register()
class Normalize:
    """PIL RGB image -> float32 CHW array ``(pixel / scale - mean) / std``.

    The defaults (mean = std = 0.5, scale 255) put values in [-1, 1], as MLP-Mixer's
    reference preprocessing does; ImageNet statistics work too
    (``mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]``).
    """

    def __init__(self, mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5), scale: float = 255.0):
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ConfigError(f"Normalize needs 3 means and 3 positive stds, got mean={mean!r}, "
                              f"std={std!r}.")
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        self.scale = float(scale)

    def __call__(self, img, rng):
        require_pil(img, "Normalize")
        return (pil_to_chw(img) / self.scale - self.mean) / self.std

    def __repr__(self) -> str:
        return (f"Normalize(mean={self.mean.ravel().tolist()}, std={self.std.ravel().tolist()}, "
                f"scale={self.scale})")


@TRANSFORMS.register()
class RandomErasing:
    """Erase random rectangles of a normalized CHW array (Zhong et al. 2017, timm's version).

    With probability ``prob``, up to ``max_count`` boxes (1..max_count, uniformly) each cover a
    fraction ``scale`` of the area (divided among the boxes) with aspect ratio in ``ratio``.
    ``mode``: 'pixel' fills with per-pixel N(0, 1) noise, 'rand' with one N(0, 1) value per
    channel, 'const' with zeros (the mean, since the input is normalized).
    """

    MODES = ("pixel", "rand", "const")

    def __init__(self, prob: float = 0.25, scale: Sequence[float] = (0.02, 1 / 3),
                 ratio: Sequence[float] = (0.3, 3.3), mode: str = "pixel", max_count: int = 1):
        if mode not in self.MODES:
            raise ConfigError(f"RandomErasing mode '{mode}' is unknown. "
                              f"Accepted modes: {', '.join(self.MODES)}.")
        if not (isinstance(max_count, int) and max_count >= 1):
            raise ConfigError(f"RandomErasing max_count must be an int >= 1, got {max_count!r}.")
        self.prob = check_prob(prob, "RandomErasing")
        self.scale = check_range(scale, "RandomErasing scale")
        self.ratio = check_range(ratio, "RandomErasing ratio")
        self.mode = mode
        self.max_count = max_count

    def __call__(self, img, rng):
        if not (isinstance(img, np.ndarray) and img.ndim == 3):
            raise ConfigError(f"RandomErasing works on the CHW array Normalize returns, but got "
                              f"{type(img).__name__}: put it after Normalize.")
        if rng.random() >= self.prob:
            return img
        img = img.copy()
        channels, height, width = img.shape
        count = int(rng.integers(1, self.max_count + 1))
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(count):
            for _attempt in range(10):
                target_area = height * width * rng.uniform(*self.scale) / count
                aspect = math.exp(rng.uniform(*log_ratio))
                h = int(round(math.sqrt(target_area * aspect)))
                w = int(round(math.sqrt(target_area / aspect)))
                if 0 < w < width and 0 < h < height:
                    top = int(rng.integers(0, height - h + 1))
                    left = int(rng.integers(0, width - w + 1))
                    img[:, top:top + h, left:left + w] = self._fill((channels, h, w), rng)
                    break
        return img

    def _fill(self, shape, rng) -> np.ndarray:
        if self.mode == "pixel":
            return rng.standard_normal(shape, dtype=np.float32)
        if self.mode == "rand":
            return rng.standard_normal((shape[0], 1, 1), dtype=np.float32)
        return np.zeros((shape[0], 1, 1), dtype=np.float32)

    def __repr__(self) -> str:
        return (f"RandomErasing(prob={self.prob}, scale={self.scale}, ratio={self.ratio}, "
                f"mode={self.mode!r}, max_count={self.max_count})")

