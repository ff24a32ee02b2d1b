"""Building blocks shared by the MLP family (Mixer, gMLP, ResMLP, FNet) and the check that
chained parts (backbone -> neck -> head) agree on their feature widths.

Token-axis layers take features [B, S, C] and mix along S. They compute ``W^T x`` with the
weight on the left (Paddle keeps Linear weights [in, out]) instead of transposing the features
to [B, C, S] and back: in an exported model on CPU that cut token mixing's time by a third
(two transposes per block, each a full pass over the activations); in dygraph both forms run
equally fast. Their parameters are ordinary ``nn.Linear`` ones, so state-dict names are those
of a Linear over S.

A layer that needs its own initialisation owns an ``init_weights(scheme)`` method; the schemes
in ``init.py`` call it for the layer's whole subtree instead of their generic rules.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import paddle
import paddle.nn as nn

from .. import cpu_kernels
from ..errors import ConfigError
from .init import constant_, init_mlp_linear_, normal_

GELU_FORMS = ("tanh", "exact")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")


def build_activation(name: str) -> nn.Layer:
    """An activation by name: 'gelu' (the erf form), 'gelu_tanh' (the tanh approximation the
    original Flax Mixer uses), 'relu', 'silu'; 'tanh' and 'exact' name the two GELU forms."""
    name = {"tanh": "gelu_tanh", "exact": "gelu"}.get(name, name)
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate=True)
    if name == "relu":
        return nn.ReLU()
    if name == "silu":
        return nn.Silu()
    raise ConfigError(f"Unknown activation {name!r}. Accepted: {', '.join(ACTIVATIONS)} "
                      f"(or the GELU forms 'tanh' and 'exact').")


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


def token_linear(fc: nn.Linear, x, bias: bool = True):
    """``fc`` applied along the token axis 1 of ``x`` [B, S_in, C] -> [B, S_out, C], as
    ``W^T x + b`` (no transposes). The bias broadcasts along C in the matmul's dtype (under AMP
    O1 the matmul runs in fp16/bf16 while the bias stays fp32, as in ``nn.Linear``);
    ``bias=False`` leaves it out (``W^T x``)."""
    y = paddle.matmul(fc.weight, x, transpose_x=True)
    if not bias:
        return y
    if cpu_kernels.cpu_training(fc.training, y) and not fc.bias.stop_gradient:
        return _TokenBiasGradAsProduct.apply(y, fc.bias)
    return y + fc.bias.astype(y.dtype).unsqueeze(-1)


class _LinearBiasGradAsProduct(paddle.autograd.PyLayer):
    """``x @ W + b`` whose backward computes the bias gradient as ``ones[1, rows] @ dY``."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.input_grad = not x.stop_gradient  # e.g. the images at the patch stem: no dX
        return cpu_kernels.add_bias(paddle.matmul(x, weight), bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensor()
        rows_grad = grad.reshape([-1, grad.shape[-1]])
        rows_x = x.reshape([-1, x.shape[-1]])
        ones = paddle.ones([1, rows_grad.shape[0]], dtype=grad.dtype)
        return (paddle.matmul(grad, weight, transpose_y=True) if ctx.input_grad else None,
                paddle.matmul(rows_x, rows_grad, transpose_x=True),
                paddle.matmul(ones, rows_grad).reshape([weight.shape[-1]]))


def product_grads_apply(training: bool, x, weight, bias) -> bool:
    """Whether ``x @ weight + bias`` runs as :class:`_LinearBiasGradAsProduct`: dygraph CPU
    training (:func:`cpu_kernels.cpu_training`) with weight and bias both wanting a gradient."""
    return (bias is not None and cpu_kernels.cpu_training(training, x, weight, bias)
            and not (weight.stop_gradient or bias.stop_gradient))


def linear_product_grads(x, weight, bias):
    """``x @ weight + bias`` (weight [in, out]) as :class:`_LinearBiasGradAsProduct`, where
    :func:`product_grads_apply` holds."""
    return _LinearBiasGradAsProduct.apply(x, weight, bias)


class _TokenBiasGradAsProduct(paddle.autograd.PyLayer):
    """``y + b[:, None]`` on [B, S, C] whose backward sums dY over B and C for ``b`` as the
    product ``dY @ ones[C, 1]`` (Paddle's CPU reduction over those two axes is ~8x slower)."""

    @staticmethod
    def forward(ctx, y, bias):
        return cpu_kernels.add_bias(y, bias, -2)

    @staticmethod
    def backward(ctx, grad):
        ones = paddle.ones([grad.shape[-1], 1], dtype=grad.dtype)
        return grad, paddle.matmul(grad, ones).sum(axis=0).reshape([-1])


class _ResidualAdd(paddle.autograd.PyLayer):
    """``x + scale[b] * y`` (``scale`` one value per sample, or None for 1) with the fused
    kernel; x's gradient is the output's, y's the output's times ``scale``."""

    @staticmethod
    def forward(ctx, x, y, scale):
        ctx.scale = scale
        return cpu_kernels.residual_add(x, y, scale)

    @staticmethod
    def backward(ctx, grad):
        if ctx.scale is None:
            return grad, grad
        return grad, cpu_kernels.residual_add(None, grad, ctx.scale)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, names and forward) whose backward is faster on a CPU.

    Paddle's CPU backward of ``matmul(x, W) + b`` sums the output gradient over its rows for
    ``b`` with a column-wise reduction that runs on one core and misses the cache: 47 ms for
    the [3136, 2048] gradient of Mixer-S/16's first channel Linear at batch 16 (AMD EPYC),
    against ~1 ms as the product ``ones[1, rows] @ dY`` that MKL runs. That sum took 5-8 % of a
    whole training step. So in dygraph training on a CPU, when every input needs its gradient,
    the layer runs as a PyLayer whose backward makes the same three gradients with products
    only; everywhere else (evaluation, a traced or exported program, a GPU, a frozen layer) it
    is exactly ``nn.Linear``."""

    def forward(self, x):
        if product_grads_apply(self.training, x, self.weight, self.bias):
            return linear_product_grads(x, self.weight, self.bias)
        return super().forward(x)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last axis that trains with the fused CPU kernel
    (``cpu_kernels``) where it applies; the same parameters and names."""

    def forward(self, x):
        if (len(self._normalized_shape) == 1 and self.weight is not None
                and self.bias is not None
                and cpu_kernels.wanted(self.training, x, self.weight, self.bias)):
            return cpu_kernels.layer_norm(x, self.weight, self.bias, self._epsilon)
        return super().forward(x)


class TokenLinear(nn.Linear):
    """A Linear over the token axis: [B, S_in, C] -> [B, S_out, C]; weight [S_in, S_out]."""

    def forward(self, x):
        return token_linear(self, x)


class Mlp(nn.Layer):
    """Linear -> activation -> dropout -> Linear -> dropout (the Mixer's MlpBlock).

    ``gelu='tanh'`` uses the tanh approximation that the original Flax code uses;
    ``gelu='exact'`` the erf form.
    """

    def __init__(self, in_features: int, hidden_features: int, out_features: int = None,
                 gelu: str = "tanh", drop: float = 0.0):
        super().__init__()
        if gelu not in GELU_FORMS:
            raise ValueError(f"gelu must be 'tanh' or 'exact', got {gelu!r}")
        out_features = out_features or in_features
        self.fc1 = Linear(in_features, hidden_features)
        self.act = build_activation(gelu)
        self.fc2 = Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        if cpu_kernels.wanted(self.training, x, self.fc1.weight, self.fc1.bias):
            h = cpu_kernels.linear_gelu(x, self.fc1.weight, self.fc1.bias, self.act._approximate)
        else:
            h = self.act(self.fc1(x))
        return self.drop(self.fc2(self.drop(h)))

    def init_weights(self, scheme: str = "default"):
        init_mlp_linear_(self.fc1, scheme)
        init_mlp_linear_(self.fc2, scheme)


class TokenMixingMlp(Mlp):
    """The Mlp applied along the token axis S of [B, S, C] features (the Mixer's token mixing).

    The same layers, parameters and state-dict names as ``Mlp(S, D_S)`` on the transposed table
    [B, C, S], computed as ``W^T x`` (see the module docstring).

    ``output_bias = False`` (set only while an inference program is traced, by
    ``MlpMixer.set_inference_form``) leaves out ``fc2``'s bias: it adds one constant per token,
    which a LayerNorm over channels removes, so where only such norms read the output it
    changes nothing but costs an add (see ``MlpMixer.set_inference_form``)."""
    output_bias = True

    def forward(self, x):  # x: [B, S, C] -> [B, S, C]
        if cpu_kernels.wanted(self.training, x, self.fc1.weight, self.fc1.bias):
            h = cpu_kernels.token_linear_gelu(x, self.fc1.weight, self.fc1.bias,
                                              self.act._approximate)
        else:
            h = self.act(token_linear(self.fc1, x))        # [B, D_S, C]
        return self.drop(token_linear(self.fc2, self.drop(h), bias=self.output_bias))


class SpatialGatingUnit(nn.Layer):
    """gMLP's spatial gating unit (Liu et al., 2021): split the channels of [B, S, 2c] into
    halves u, v; normalise v; mix v across the S tokens with a linear S -> S; return u * v.

    The projection starts near the identity gate, as the paper prescribes: weight ~ N(0, 1e-6)
    and bias 1, so at initialisation the projection is ~1 everywhere and the unit passes u."""

    def __init__(self, dim: int, num_tokens: int, norm_eps: float = 1e-5):
        super().__init__()
        if dim % 2:
            raise ConfigError(f"The spatial gating unit splits the channels in half; {dim} "
                              f"channels do not split.")
        self.norm = LayerNorm(dim // 2, epsilon=norm_eps)
        self.proj = TokenLinear(num_tokens, num_tokens)

    def forward(self, x):
        u, v = paddle.chunk(x, 2, axis=-1)
        return u * self.proj(self.norm(v))

    def init_weights(self, scheme: str = "default"):
        constant_(self.norm.weight, 1.0)
        constant_(self.norm.bias, 0.0)
        normal_(self.proj.weight, 1e-6)
        constant_(self.proj.bias, 1.0)


class GatedMlp(nn.Layer):
    """Linear (C -> D) -> activation -> dropout -> spatial gating (D -> D/2) -> Linear
    (D/2 -> C) -> dropout: gMLP's channel MLP with the gate inside."""

    def __init__(self, in_features: int, hidden_features: int, num_tokens: int,
                 gelu: str = "exact", drop: float = 0.0, gate_norm_eps: float = 1e-5):
        super().__init__()
        self.fc1 = Linear(in_features, hidden_features)
        self.act = build_activation(gelu)
        self.gate = SpatialGatingUnit(hidden_features, num_tokens, norm_eps=gate_norm_eps)
        self.fc2 = Linear(hidden_features // 2, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        if isinstance(self.act, nn.GELU) and cpu_kernels.wanted(
                self.training, x, self.fc1.weight, self.fc1.bias):
            x = cpu_kernels.linear_gelu(x, self.fc1.weight, self.fc1.bias, self.act._approximate)
        else:
            x = self.act(self.fc1(x))
        return self.drop(self.fc2(self.gate(self.drop(x))))

    def init_weights(self, scheme: str = "default"):
        init_mlp_linear_(self.fc1, scheme)
        self.gate.init_weights(scheme)
        init_mlp_linear_(self.fc2, scheme)


class Affine(nn.Layer):
    """ResMLP's per-channel ``alpha * x + beta`` (Touvron et al., 2021), in place of LayerNorm.
    Parameters are [1, 1, dim], the shape timm stores."""

    def __init__(self, dim: int):
        super().__init__()
        self.alpha = self.create_parameter([1, 1, dim], default_initializer=nn.initializer.Constant(1.0))
        self.beta = self.create_parameter([1, 1, dim], default_initializer=nn.initializer.Constant(0.0))

    def forward(self, x):
        return x * self.alpha + self.beta

    def init_weights(self, scheme: str = "default"):
        constant_(self.alpha, 1.0)
        constant_(self.beta, 0.0)


class LayerScale(nn.Layer):
    """A learned per-channel scale of a residual branch, started at ``init_values``
    (CaiT/ResMLP's LayerScale): small values let deep stacks start close to the identity."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.init_values = float(init_values)
        self.gamma = self.create_parameter(
            [dim], default_initializer=nn.initializer.Constant(self.init_values))

    def forward(self, x):
        return x * self.gamma

    def init_weights(self, scheme: str = "default"):
        constant_(self.gamma, self.init_values)

    def extra_repr(self):
        return f"init_values={self.init_values}"


class FrozenBatchNorm(nn.Layer):
    """A Paddle BatchNorm in evaluation mode as what it computes there, a per-channel affine map
    on axis 1: ``x * scale + shift`` with ``scale = weight / sqrt(var + eps)``, ``shift = bias -
    mean * scale``. For inference programs: Paddle 3.3.1's oneDNN ``batch_norm`` kernel crashes
    Paddle Inference on the [B, C] features of a linear probe's BatchNorm neck."""

    def __init__(self, bn: nn.Layer):
        super().__init__()
        scale = paddle.rsqrt(bn._variance + bn._epsilon)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn._mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        self.register_buffer("scale", scale.detach())
        self.register_buffer("shift", shift.detach())

    def forward(self, x):
        shape = [1, -1] + [1] * (x.ndim - 2)
        return x * self.scale.reshape(shape) + self.shift.reshape(shape)


def freeze_batch_norms(layer: nn.Layer) -> int:
    """Replace, in place, every Paddle BatchNorm below ``layer`` by its :class:`FrozenBatchNorm`
    (the same function in evaluation mode); returns how many were replaced."""
    count = 0
    for name, child in list(layer.named_children()):
        if isinstance(child, nn.layer.norm._BatchNormBase) and child._data_format in (
                "NC", "NCL", "NCHW", "NCDHW"):
            setattr(layer, name, FrozenBatchNorm(child))
            count += 1
        else:
            count += freeze_batch_norms(child)
    return count


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

    def residual(self, x, branch):
        """``x + self(branch)``, a residual connection. In dygraph CPU training one fused pass
        (``cpu_kernels``) instead of Paddle's single-core add, and with p > 0 multiply and
        scale, forward and backward (2.9% of a Mixer-B/16 step at p = 0.1)."""
        if cpu_kernels.wanted(self.training, branch, x) and x.shape == branch.shape:
            scale = None
            if self.p > 0.0:  # the same per-sample draw as forward()
                keep = 1.0 - self.p
                scale = paddle.floor(keep + paddle.rand([x.shape[0]], dtype=x.dtype)) / keep
            return _ResidualAdd.apply(x, branch, scale)
        return x + self(branch)

    def extra_repr(self):
        return f"p={self.p}"
