"""Weight initialisation schemes, selected by name (``init: default`` or ``init: jax``).

``default`` (the recipe PASSL and timm use for Mixer):
  Linear weights xavier-uniform; biases of the MLP layers normal(std 1e-6); other biases zero;
  LayerNorm weight 1, bias 0; stem conv weight truncated normal(std 0.02), bias 0.
``jax`` (the original Flax code's defaults):
  every kernel (Dense and the stem Conv) lecun-normal, i.e. truncated normal with
  std sqrt(1 / fan_in) / 0.8796 cut at two standard deviations; all biases zero; LayerNorm 1/0.
Classification heads are always zero-initialised (weight and bias), as in the paper.
A layer with its own rule owns an ``init_weights(scheme)`` method, which these schemes call for
its whole subtree: the MLPs (``layers.Mlp``: the default scheme's normal(1e-6) biases), gMLP's
gating unit (projection weight normal(1e-6), bias 1), Affine (1, 0) and LayerScale (its
``init_values``). This module needs to know no block type.

All draws come from Paddle's generator, so ``paddle.seed`` makes initialisation repeatable.
Under ``paddle.LazyGuard`` (build the shapes now, load weights later) parameters have no memory
yet and are left alone: their values come from the checkpoint that is loaded next.
"""
from __future__ import annotations

import math

import paddle
import paddle.nn as nn

from ..errors import ConfigError

SCHEMES = ("default", "jax")
# std of a standard normal truncated to [-2, 2]; dividing by it restores the wanted variance
_TRUNC2_STD = 0.87962566103423978


def trunc_normal_(param, std: float, bound: float = 2.0):
    """Fill ``param`` with a normal(0, std) truncated to [-bound*std, bound*std]."""
    lo = 0.5 * (1.0 + math.erf(-bound / math.sqrt(2.0)))
    hi = 0.5 * (1.0 + math.erf(bound / math.sqrt(2.0)))
    u = paddle.uniform(param.shape, dtype="float32", min=2 * lo - 1, max=2 * hi - 1)
    param.set_value((paddle.erfinv(u) * (math.sqrt(2.0) * std)).astype(param.dtype))


def normal_(param, std: float):
    param.set_value(paddle.normal(0.0, std, param.shape).astype(param.dtype))


def xavier_uniform_(param):
    fan_in, fan_out = param.shape[0], param.shape[1]  # Paddle Linear weights are [in, out]
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    param.set_value(paddle.uniform(param.shape, dtype="float32", min=-limit, max=limit)
                    .astype(param.dtype))


def constant_(param, value: float):
    param.set_value(paddle.full(param.shape, value, dtype=param.dtype))


def fan_in(param) -> int:
    if param.ndim == 2:  # Linear [in, out]
        return param.shape[0]
    return int(param.shape[1] * math.prod(param.shape[2:]))  # Conv [out, in, kh, kw]


def lecun_normal_(param):
    trunc_normal_(param, math.sqrt(1.0 / fan_in(param)) / _TRUNC2_STD)


def is_lazy(layer: nn.Layer) -> bool:
    """True when ``layer`` was built under ``paddle.LazyGuard`` (parameters have no memory)."""
    return any(not p._is_initialized() for p in layer.parameters())


def init_linear_(fc: nn.Linear, scheme: str, bias_std: float = 0.0) -> None:
    """A Linear layer under ``scheme``: xavier-uniform (default) or lecun-normal (jax) weight;
    bias normal(``bias_std``) under the default scheme (0: zero), zero under jax."""
    if scheme == "jax":
        lecun_normal_(fc.weight)
        constant_(fc.bias, 0.0)
        return
    xavier_uniform_(fc.weight)
    if bias_std:
        normal_(fc.bias, bias_std)
    else:
        constant_(fc.bias, 0.0)


def init_mlp_linear_(fc: nn.Linear, scheme: str) -> None:
    """A Linear inside an MLP: its bias gets the default scheme's normal(1e-6)."""
    init_linear_(fc, scheme, bias_std=1e-6)


def init_weights(layer: nn.Layer, scheme: str = "default") -> None:
    """Initialise every Linear, Conv2D and LayerNorm below ``layer`` with ``scheme``.

    A sublayer with its own ``init_weights(scheme)`` method (an MLP, the gating unit, Affine,
    LayerScale, ...) initialises its whole subtree itself; the generic rules cover the rest.
    Layers are visited in order, so a seed gives the same weights every time. Heads are
    initialised by the head itself.
    """
    if scheme not in SCHEMES:
        raise ConfigError(f"Unknown init scheme '{scheme}'. Accepted: {', '.join(SCHEMES)}.")
    if is_lazy(layer):
        return
    owned = set()  # ids of layers inside a subtree whose owner initialised it
    for m in layer.sublayers(include_self=False):
        if id(m) in owned:
            continue
        if callable(getattr(m, "init_weights", None)):
            m.init_weights(scheme)
            owned.update(id(sub) for sub in m.sublayers())
        elif isinstance(m, nn.Linear):
            init_linear_(m, scheme)
        elif isinstance(m, nn.Conv2D):
            if scheme == "jax":
                lecun_normal_(m.weight)
            else:
                trunc_normal_(m.weight, 0.02)
            if m.bias is not None:
                constant_(m.bias, 0.0)
        elif isinstance(m, nn.LayerNorm):
            constant_(m.weight, 1.0)
            constant_(m.bias, 0.0)
