"""Classification losses, selected in YAML under ``head.loss``.

Both accept hard labels (int64 [B]) and soft targets (float [B, num_classes], what Mixup and
CutMix produce), so switching mixup on or off needs no change to the loss config.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..registry import LOSSES

from ..schema import DropRate


def soft_target_cross_entropy(logits, soft_targets):
    return (-soft_targets * F.log_softmax(logits, axis=-1)).sum(axis=-1).mean()


@LOSSES.register()
class CrossEntropyLoss(nn.Layer):
    """Cross-entropy with optional label smoothing (the target keeps ``1 - label_smoothing``
    and spreads ``label_smoothing`` uniformly over all classes). Soft targets are used as
    given: smoothing for mixup is applied when the soft targets are made."""

    def __init__(self, label_smoothing: DropRate = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits, target):
        if target.ndim == 2 and target.dtype in (paddle.float32, paddle.float16, paddle.bfloat16,
                                                 paddle.float64):
            return soft_target_cross_entropy(logits, target.astype(logits.dtype))
        target = target.reshape([-1]).astype("int64")
        if self.label_smoothing == 0.0:
            return F.cross_entropy(logits, target)
        num_classes = logits.shape[-1]
        smooth = F.one_hot(target, num_classes) * (1.0 - self.label_smoothing) \
            + self.label_smoothing / num_classes
        return soft_target_cross_entropy(logits, smooth.astype(logits.dtype))


@LOSSES.register()
class SoftTargetCrossEntropy(nn.Layer):
    """Cross-entropy against soft targets [B, num_classes] only."""

    def __init__(self):  # no options; explicit so that the config schema sees no arguments
        super().__init__()

    def forward(self, logits, target):
        if target.ndim != 2:
            raise ValueError(f"SoftTargetCrossEntropy needs soft targets [B, num_classes], "
                             f"got shape {list(target.shape)}; use CrossEntropyLoss for labels.")
        return soft_target_cross_entropy(logits, target.astype(logits.dtype))
