"""The linear classification head: pooled features [B, C] -> logits [B, num_classes]."""
from __future__ import annotations

import copy
from typing import Dict, Optional, Sequence

import paddle
import paddle.nn as nn

from ...registry import HEADS, build_loss
from ...schema import NonNegativeInt, PositiveInt
from ..init import constant_, is_lazy


def topk_accuracy(logits, labels, topk: Sequence[int] = (1, 5)) -> Dict[str, paddle.Tensor]:
    """Top-k accuracy in percent for each k (k larger than the class count counts as that)."""
    if labels.ndim == 2:  # soft targets: score against the dominant class
        labels = labels.argmax(axis=-1)
    labels = labels.reshape([-1, 1]).astype("int64")
    maxk = min(max(topk), logits.shape[-1])
    pred = paddle.topk(logits, maxk, axis=-1)[1]
    correct = (pred == labels).astype("float32")
    return {f"acc{k}": correct[:, :min(k, maxk)].sum(axis=1).mean() * 100.0 for k in topk}


@HEADS.register()
class LinearClsHead(nn.Layer):
    """One Linear layer, zero-initialised (weight and bias) as in the paper, plus its loss.

    Args:
        num_classes: output classes.
        in_channels: feature width of the backbone (its ``num_features``).
        loss: loss config, e.g. ``{name: CrossEntropyLoss, label_smoothing: 0.1}``.
        topk: accuracies reported during training.
    """

    def __init__(self, num_classes: NonNegativeInt, in_channels: PositiveInt,
                 loss: Optional[Dict] = None, topk: Sequence[PositiveInt] = (1, 5)):
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.topk = tuple(topk)
        self.loss_fn = build_loss(loss or {"name": "CrossEntropyLoss"})  # copies the config
        self.loss_cfg = copy.deepcopy(loss) if loss else {"name": "CrossEntropyLoss"}
        self.fc = nn.Linear(in_channels, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self, scheme: str = "default"):
        """Zero weight and bias under every scheme, as the paper does."""
        if isinstance(self.fc, nn.Linear) and not is_lazy(self.fc):
            constant_(self.fc.weight, 0.0)
            constant_(self.fc.bias, 0.0)

    def reset(self, num_classes: int):
        """Replace the classifier with a fresh zero one for ``num_classes`` (0: no classifier)."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.in_channels, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def forward(self, features):
        return self.fc(features)

    def loss(self, logits, target) -> Dict[str, paddle.Tensor]:
        out = {"loss": self.loss_fn(logits, target)}
        out.update(topk_accuracy(logits.detach(), target, self.topk))
        return out
