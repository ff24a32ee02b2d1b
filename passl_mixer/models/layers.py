"""Building blocks shared by the models: the two-layer MLP and stochastic depth."""
from __future__ import annotations

import paddle
import paddle.nn as nn


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
