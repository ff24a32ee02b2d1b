"""RandAugment (Cubuk et al. 2019) on PIL images, following timm's ``rand-m*-inc1`` policy.

Each call picks ``num_ops`` operations uniformly (with replacement) and applies each with
probability ``prob`` at a magnitude on the paper's 0..10 scale. The op set and the magnitude ->
argument mapping are timm's "increasing" variants, so a larger magnitude always means a
stronger distortion. Magnitudes up to 30 are accepted: timm clips at 10 unless asked not to;
here a configured magnitude above 10 is used as given (like the TF reference), so e.g. 15 is
stronger than 10. ``magnitude_std`` adds Gaussian noise per op (``inf``: uniform in
[0, magnitude]); the noisy value is clipped to [0, max(10, magnitude)].

Every op has the signature ``op(img, level, rng, fill, resample)`` with ``level =
magnitude / 10``; the ops that have a direction (rotate, shear, translate, enhance) take a
random sign from ``rng``.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from ..errors import ConfigError
from ..registry import TRANSFORMS
from .transforms import check_prob, interpolation_mode, require_pil

MAX_MAGNITUDE = 30.0
_DEFAULT_FILL = (128, 128, 128)  # gray for the area an affine op uncovers, as in timm


def _signed(value: float, rng: np.random.Generator) -> float:
    return -value if rng.random() < 0.5 else value


def _affine(img, coeffs, fill, resample):
    return img.transform(img.size, Image.Transform.AFFINE, coeffs, resample=resample,
                         fillcolor=fill)


def _enhance(enhancer):
    def op(img, level, rng, fill, resample):
        return enhancer(img).enhance(max(0.1, 1.0 + _signed(0.9 * level, rng)))
    return op


def auto_contrast(img, level, rng, fill, resample):
    return ImageOps.autocontrast(img)


def equalize(img, level, rng, fill, resample):
    return ImageOps.equalize(img)


def invert(img, level, rng, fill, resample):
    return ImageOps.invert(img)


def rotate(img, level, rng, fill, resample):
    return img.rotate(_signed(30.0 * level, rng), resample=resample, fillcolor=fill)


def posterize(img, level, rng, fill, resample):
    # Fewer bits kept as the level grows (4 at level 0); at least 1, the fewest PIL accepts.
    return ImageOps.posterize(img, max(1, 4 - int(4 * level)))


def solarize(img, level, rng, fill, resample):
    # Pixels >= threshold are inverted; the threshold falls from 256 (none) as the level grows.
    return ImageOps.solarize(img, max(0, 256 - int(256 * level)))


def solarize_add(img, level, rng, fill, resample):
    add = min(128, int(110 * level))
    lut = [min(255, i + add) if i < 128 else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def shear_x(img, level, rng, fill, resample):
    return _affine(img, (1, _signed(0.3 * level, rng), 0, 0, 1, 0), fill, resample)


def shear_y(img, level, rng, fill, resample):
    return _affine(img, (1, 0, 0, _signed(0.3 * level, rng), 1, 0), fill, resample)


def translate_x(img, level, rng, fill, resample):
    pixels = _signed(0.45 * level, rng) * img.width
    return _affine(img, (1, 0, pixels, 0, 1, 0), fill, resample)


def translate_y(img, level, rng, fill, resample):
    pixels = _signed(0.45 * level, rng) * img.height
    return _affine(img, (1, 0, 0, 0, 1, pixels), fill, resample)


OPS: Dict[str, Callable] = {
    "AutoContrast": auto_contrast,
    "Equalize": equalize,
    "Invert": invert,
    "Rotate": rotate,
    "Posterize": posterize,
    "Solarize": solarize,
    "SolarizeAdd": solarize_add,
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateX": translate_x,
    "TranslateY": translate_y,
}

# PIL's rotate/affine support only these filters.
_AFFINE_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


@TRANSFORMS.register()
class RandAugment:
    """Apply ``num_ops`` random ops from ``ops`` (default: all of :data:`OPS`).

    ``prob`` is the chance each picked op is applied (timm uses 0.5), ``fill`` the RGB color of
    areas that rotate/shear/translate uncover, ``interpolation`` the filter those ops use.
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 9, magnitude_std: float = 0.0,
                 prob: float = 0.5, ops: Optional[Sequence[str]] = None,
                 fill: Sequence[int] = _DEFAULT_FILL, interpolation: str = "bicubic"):
        if not 0 <= magnitude <= MAX_MAGNITUDE:
            raise ConfigError(f"RandAugment magnitude must be in [0, {MAX_MAGNITUDE:g}], "
                              f"got {magnitude!r}.")
        if magnitude_std < 0:
            raise ConfigError(f"RandAugment magnitude_std must be >= 0, got {magnitude_std!r}.")
        if not (isinstance(num_ops, int) and num_ops >= 0):
            raise ConfigError(f"RandAugment num_ops must be an int >= 0, got {num_ops!r}.")
        if interpolation not in _AFFINE_INTERPOLATIONS:
            raise ConfigError(f"RandAugment interpolation '{interpolation}' is not supported. "
                              f"Accepted names: {', '.join(_AFFINE_INTERPOLATIONS)}.")
        self.ops = list(OPS) if ops is None else list(ops)
        unknown = [name for name in self.ops if name not in OPS]
        if unknown or not self.ops:
            raise ConfigError(f"RandAugment ops {unknown or self.ops} are not known or empty. "
                              f"Accepted ops: {', '.join(OPS)}.")
        self.num_ops = num_ops
        self.magnitude = float(magnitude)
        self.magnitude_std = float(magnitude_std)
        self.prob = check_prob(prob, "RandAugment")
        self.fill = tuple(int(c) for c in fill)
        self.interpolation = interpolation
        self._resample = interpolation_mode(interpolation)

    def _sample_magnitude(self, rng: np.random.Generator) -> float:
        magnitude = self.magnitude
        if self.magnitude_std == float("inf"):
            magnitude = rng.uniform(0.0, magnitude)
        elif self.magnitude_std > 0:
            magnitude = rng.normal(magnitude, self.magnitude_std)
        return float(np.clip(magnitude, 0.0, max(10.0, self.magnitude)))

    def __call__(self, img, rng):
        require_pil(img, "RandAugment")
        for index in rng.integers(0, len(self.ops), size=self.num_ops):
            if rng.random() >= self.prob:
                continue
            level = self._sample_magnitude(rng) / 10.0
            img = OPS[self.ops[index]](img, level, rng, self.fill, self._resample)
        return img

    def __repr__(self) -> str:
        return (f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude:g}, "
                f"magnitude_std={self.magnitude_std:g}, prob={self.prob}, ops={self.ops})")
