"""Building blocks shared by the models: the two-layer MLP, stochastic depth, and the check
that chained parts (backbone -> neck -> head) agree on their feature widths."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import paddle
import paddle.nn as nn

from ..errors import ConfigError


def check_widths(width: Optional[int], parts: Sequence[Tuple[str, Optional[nn.Layer]]]):
    """Check that each part's ``in_channels`` equals the width of what feeds it, so a wrong
    width is a config error at build time rather than a matmul error deep in Paddle at the
    first batch. ``width`` is the first input's (a backbone's ``num_features``); ``parts`` are
    (config key, layer or None) in order. Returns the width coming out of the last part."""
    for key, part in parts:
        if part is None:
            continue
        wants = getattr(part, "in_channels", None)
        if width is not None and wants is not None and wants != width:
            raise ConfigError(f"{key}.in_channels is {wants}, but the features it receives have "
                              f"{width} channels: set {key}.in_channels: {width}.")
        width = getattr(part, "out_channels", width)
    return width


class Mlp(nn.Layer):
    """Linear -> GELU -> dropout -> Linear -> dropout (the Mixer's MlpBlock).

    ``gelu='tanh'`` uses the tanh approximation that the original Flax code uses;
    ``gelu='exact'`` the erf form.
    """

    def __init__(self, in_features: int, hidden_features: int, out_features: int = None,
                 gelu: str = "tanh", drop: float = 0.0):
        super().__init__()
        if gelu not in ("tanh", "exact"):
            raise ValueError(f"gelu must be 'tanh' or 'exact', got {gelu!r}")
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate=gelu == "tanh")
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Layer):
    """Stochastic depth: in training, zero a sample's residual branch with probability ``p``
    and scale the kept ones by 1 / (1 - p), so the expectation is unchanged."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = [x.shape[0]] + [1] * (x.ndim - 1)
        mask = paddle.floor(keep + paddle.rand(shape, dtype=x.dtype))
        return x * mask / keep

    def extra_repr(self):
        return f"p={self.p}"
