"""BatchNormNeck: a BatchNorm without scale and shift between pooled features and the head.

    features [B, in_channels] -> BatchNorm1D(affine=False, eps=1e-6) -> [B, in_channels]

The linear-probe protocol of MAE (He et al., 2022, appendix A.2), also used for MoCo v3 and
BEiT probes: features of a frozen backbone come with very different scales per channel, which a
single linear layer trained for a few epochs adapts to poorly; normalising them first makes the
probe measure the features rather than their calibration. The norm has no learnable
parameters, so the probe stays linear (at test time it is a fixed affine map that folds into the
classifier). Its running statistics are buffers: a checkpoint without them (an SSL or published
backbone) leaves them at their initialisation when loaded through ``model.pretrained``.
"""
from __future__ import annotations

import paddle.nn as nn

from ...registry import NECKS
from ...schema import PositiveFloat, PositiveInt, Probability


@NECKS.register()
class BatchNormNeck(nn.Layer):
    """See the module docstring. ``in_channels`` is the backbone's ``num_features``."""

    def __init__(self, in_channels: PositiveInt, epsilon: PositiveFloat = 1e-6,
                 momentum: Probability = 0.9):
        super().__init__()
        self.in_channels = self.out_channels = in_channels
        # Paddle's momentum is the weight of the old running statistic (PyTorch's 0.1 = 0.9 here)
        self.bn = nn.BatchNorm1D(in_channels, momentum=momentum, epsilon=epsilon,
                                 weight_attr=False, bias_attr=False)

    def forward(self, x):
        return self.bn(x)
