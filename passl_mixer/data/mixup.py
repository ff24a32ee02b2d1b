"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on a batch, with soft targets.

As in timm's ``Mixup`` in 'batch' mode: one lambda per batch, each image mixed with the image at
the mirrored position of the batch (``flip(0)``), targets mixed with the same weight and label
smoothing applied. Randomness comes from the ``numpy.random.Generator`` passed in; seed it from
(seed, epoch, step) and give every rank the same one, so all ranks draw the same lambda and box.
"""
from __future__ import annotations

from typing import Literal, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F

from ..errors import ConfigError
from ..schema import DropRate, NonNegativeFloat, PositiveInt, Probability


class Mixup:
    """Per batch: with probability ``prob`` mix, choosing CutMix with ``switch_prob`` when both
    alphas are > 0 (else whichever is > 0); lambda ~ Beta(alpha, alpha).

    CutMix pastes a box of area ``(1 - lambda)`` (clipped at the image border) from the flipped
    batch; lambda is then recomputed as 1 - the clipped box area / image area, so the targets
    weigh the labels by the pixels actually shown. Without mixing (prob draw off, or both alphas
    0) the targets are the label-smoothed one-hot labels.
    """

    # The annotations are the config schema of data.mixup (checked by schema.check_call).
    def __init__(self, num_classes: PositiveInt, mixup_alpha: NonNegativeFloat = 0.8,
                 cutmix_alpha: NonNegativeFloat = 1.0, prob: Probability = 1.0,
                 switch_prob: Probability = 0.5, label_smoothing: DropRate = 0.1,
                 mode: Literal["batch"] = "batch"):
        if not (isinstance(num_classes, int) and num_classes >= 1):
            raise ConfigError(f"Mixup needs the model's class count (an int >= 1), got "
                              f"{num_classes!r}: data.mixup only applies to a classifier.")
        self.num_classes = num_classes
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.prob = float(prob)
        self.switch_prob = float(switch_prob)
        self.label_smoothing = float(label_smoothing)
        self.mode = mode

    def sample_params(self, rng: np.random.Generator) -> Tuple[float, bool]:
        """(lambda, use_cutmix) for one batch; lambda 1.0 means no mixing."""
        if rng.random() >= self.prob or (self.mixup_alpha <= 0 and self.cutmix_alpha <= 0):
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(rng.random() < self.switch_prob)
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(rng.beta(alpha, alpha)), use_cutmix

    @staticmethod
    def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator):
        """(top, bottom, left, right) of a box of about ``(1 - lam)`` of the area, clipped to
        the image, and the lambda corrected for the clipped area."""
        cut = np.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * cut), int(width * cut)
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
        left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
        lam = 1.0 - (bottom - top) * (right - left) / float(height * width)
        return (int(top), int(bottom), int(left), int(right)), float(lam)

    def smooth_one_hot(self, labels: paddle.Tensor) -> paddle.Tensor:
        off = self.label_smoothing / self.num_classes
        one_hot = F.one_hot(labels.astype("int64").reshape([-1]), self.num_classes)
        return one_hot.astype("float32") * (1.0 - self.label_smoothing) + off

    def __call__(self, images: paddle.Tensor, labels: paddle.Tensor,
                 rng: np.random.Generator) -> Tuple[paddle.Tensor, paddle.Tensor]:
        """Return ``(mixed images, float32 soft targets [B, num_classes])``; the inputs are not
        modified."""
        targets = self.smooth_one_hot(labels)
        lam, use_cutmix = self.sample_params(rng)
        if use_cutmix:
            (top, bottom, left, right), lam = self.cutmix_box(images.shape[2], images.shape[3],
                                                              lam, rng)
        if lam == 1.0:  # no mixing, or a CutMix box too small to hold a pixel
            return images, targets
        flipped = paddle.flip(images, axis=[0])
        if use_cutmix:
            images = images.clone()
            images[:, :, top:bottom, left:right] = flipped[:, :, top:bottom, left:right]
        else:
            images = images * lam + flipped * (1.0 - lam)
        targets = targets * lam + paddle.flip(targets, axis=[0]) * (1.0 - lam)
        return images, targets
