"""The projector / predictor MLP of the self-supervised methods (MoCo v3, BYOL).

    features [B, in_channels]
      -> (num_layers - 1) x [Linear -> BatchNorm1D -> ReLU]      hidden width hidden_channels
      -> Linear -> (BatchNorm1D without affine, if last_bn)      -> [B, out_channels]

The published heads in this form:
  * BYOL projector and predictor:  num_layers 2, hidden 4096, out 256, last_bn false.
  * MoCo v3 projector:             num_layers 3, hidden 4096, out 256, last_bn true.
  * MoCo v3 predictor:             num_layers 2, hidden 4096, out 256, last_bn false.

A Linear that a BatchNorm follows has no bias (the norm's shift replaces it), as in MoCo v3's
code. The norms are plain ``nn.BatchNorm1D``: with ``distributed.sync_bn: true`` the trainer
replaces them by a synchronised version, so their statistics cover the global batch.
"""
from __future__ import annotations

import paddle.nn as nn

from ...errors import ConfigError
from ...registry import NECKS
from ...schema import PositiveInt


@NECKS.register()
class MLPNeck(nn.Layer):
    """See the module docstring. ``in_channels`` is the backbone's ``num_features``."""

    def __init__(self, in_channels: PositiveInt, hidden_channels: PositiveInt,
                 out_channels: PositiveInt, num_layers: PositiveInt = 2, last_bn: bool = False):
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"MLPNeck: num_layers must be >= 1, got {num_layers}.")
        self.in_channels, self.out_channels = in_channels, out_channels
        layers = []
        width = in_channels
        for _ in range(num_layers - 1):
            layers += [nn.Linear(width, hidden_channels, bias_attr=False),
                       nn.BatchNorm1D(hidden_channels), nn.ReLU()]
            width = hidden_channels
        layers.append(nn.Linear(width, out_channels, bias_attr=False if last_bn else None))
        if last_bn:
            # MoCo v3 ends its projector on a BatchNorm without learnable scale and shift
            layers.append(nn.BatchNorm1D(out_channels, weight_attr=False, bias_attr=False))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x):
        return self.mlp(x)
