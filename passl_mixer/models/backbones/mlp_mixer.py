"""MLP-Mixer (Tolstikhin et al., 2021, "MLP-Mixer: An all-MLP Architecture for Vision").

    image [B, C_in, H, W]
      -> stem: Conv2D(kernel = stride = patch)               -> tokens [B, S, C]
      -> num_blocks x MixerBlock:
             x = x + DropPath(token_mlp(LayerNorm(x)^T)^T)     mixes across the S tokens
                                                       (computed as W^T x: no transposes)
             x = x + DropPath(channel_mlp(LayerNorm(x)))       mixes across the C channels
      -> LayerNorm                                            (forward_features ends here)
      -> mean over tokens                                     -> features [B, C]   (forward)

Numerics follow the original Flax code by default: LayerNorm epsilon 1e-6 and the tanh
approximation of GELU. Stochastic depth grows linearly from 0 at the first block to
``drop_path_rate`` at the last, as in the paper (PASSL, timm and mmpretrain use one rate).

Parameter names follow timm / PASSL v1 (``stem.proj``, ``blocks.{i}.norm1``,
``blocks.{i}.mlp_tokens.fc1``, ``blocks.{i}.mlp_channels.fc2``, ``norm``), so their state dicts
load with no renaming. Paddle keeps Linear weights as [in, out], like Flax's Dense kernels.
"""
from __future__ import annotations

from typing import Dict, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import paddle
import paddle.nn as nn

from ...errors import ConfigError, ShapeError
from ...registry import BACKBONES
from ...schema import DropRate, PositiveFloat, PositiveInt
from ..init import init_weights
from ..layers import DropPath, Mlp

# The paper's Table 1. Keys are the ``arch`` names accepted by MlpMixer.
ARCHS: Dict[str, Dict[str, int]] = {
    #      patch_size     hidden_dim C    num_blocks     tokens_mlp_dim D_S  channels_mlp_dim D_C
    "s32": dict(patch_size=32, hidden_dim=512, num_blocks=8, tokens_mlp_dim=256, channels_mlp_dim=2048),
    "s16": dict(patch_size=16, hidden_dim=512, num_blocks=8, tokens_mlp_dim=256, channels_mlp_dim=2048),
    "b32": dict(patch_size=32, hidden_dim=768, num_blocks=12, tokens_mlp_dim=384, channels_mlp_dim=3072),
    "b16": dict(patch_size=16, hidden_dim=768, num_blocks=12, tokens_mlp_dim=384, channels_mlp_dim=3072),
    "l32": dict(patch_size=32, hidden_dim=1024, num_blocks=24, tokens_mlp_dim=512, channels_mlp_dim=4096),
    "l16": dict(patch_size=16, hidden_dim=1024, num_blocks=24, tokens_mlp_dim=512, channels_mlp_dim=4096),
    "h14": dict(patch_size=14, hidden_dim=1280, num_blocks=32, tokens_mlp_dim=640, channels_mlp_dim=5120),
}
DIM_KEYS = ("patch_size", "hidden_dim", "num_blocks", "tokens_mlp_dim", "channels_mlp_dim")


def _pair(v) -> Tuple[int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ConfigError(f"img_size must be an int or [height, width], got {v!r}.")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def linear_drop_path_rates(drop_path_rate: float, num_blocks: int) -> List[float]:
    """The paper's rule: 0 at the first block, ``drop_path_rate`` at the last, linear between."""
    return [float(r) for r in np.linspace(0.0, drop_path_rate, num_blocks)]


class PatchStem(nn.Layer):
    """Cut the image into non-overlapping patches and project each to ``hidden_dim``."""

    def __init__(self, patch_size: int, in_channels: int, hidden_dim: int):
        super().__init__()
        self.proj = nn.Conv2D(in_channels, hidden_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        x = self.proj(x)                          # [B, C, H/p, W/p]
        return x.flatten(2).transpose([0, 2, 1])  # [B, S, C], tokens in row-major patch order


class TokenMixingMlp(Mlp):
    """The Mlp applied along the token axis S of [B, S, C] features.

    The same layers, parameters and state-dict names as ``Mlp(S, D_S)`` on the transposed table
    [B, C, S], but computed with the weight on the left, ``W^T x`` (weights are [in, out]), so
    no [B, C, S] copy is ever made: in an exported model on CPU this cut token mixing's time by
    a third (two transposes per block, each a full pass over the activations); in dygraph the
    two forms run equally fast (B/16, same-process A/B, within run-to-run noise). The biases broadcast along C, in the matmul's dtype (under AMP O1
    the matmul runs in fp16/bf16 while the bias stays fp32, as in ``nn.Linear``).
    """

    def forward(self, x):  # x: [B, S, C] -> [B, S, C]
        h = self._linear(self.fc1, x)                      # [B, D_S, C]
        return self.drop(self._linear(self.fc2, self.drop(self.act(h))))

    @staticmethod
    def _linear(fc: nn.Linear, x):
        """``fc`` applied along axis 1 of ``x``: W^T x + b."""
        y = paddle.matmul(fc.weight, x, transpose_x=True)
        return y + fc.bias.astype(y.dtype).unsqueeze(-1)


class MixerBlock(nn.Layer):
    def __init__(self, num_tokens: int, hidden_dim: int, tokens_mlp_dim: int,
                 channels_mlp_dim: int, gelu: str = "tanh", norm_eps: float = 1e-6,
                 drop_rate: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_dim, epsilon=norm_eps)
        self.mlp_tokens = TokenMixingMlp(num_tokens, tokens_mlp_dim, gelu=gelu, drop=drop_rate)
        self.norm2 = nn.LayerNorm(hidden_dim, epsilon=norm_eps)
        self.mlp_channels = Mlp(hidden_dim, channels_mlp_dim, gelu=gelu, drop=drop_rate)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):  # x: [B, S, C]
        x = x + self.drop_path(self.mlp_tokens(self.norm1(x)))      # mixes along S
        return x + self.drop_path(self.mlp_channels(self.norm2(x)))


@BACKBONES.register()
class MlpMixer(nn.Layer):
    """The Mixer backbone. ``forward(x)`` returns pooled features [B, hidden_dim].

    Args:
        arch: one of ``ARCHS`` (s32, s16, b32, b16, l32, l16, h14); explicit dimensions below
            override the arch's values, and without ``arch`` all five must be given.
        patch_size, hidden_dim, num_blocks, tokens_mlp_dim, channels_mlp_dim: the paper's names.
        img_size: input side (int) or [height, width]; the token-mixing MLP is built for it.
        in_channels: image channels.
        gelu: 'tanh' (the original's approximation) or 'exact'.
        norm_eps: LayerNorm epsilon (1e-6 as in the original).
        drop_rate: dropout inside the MLPs.
        drop_path_rate: stochastic depth of the last block; earlier blocks get linearly less.
        out_indices: block indices (negative allowed) whose outputs [B, S, C] ``forward``
            returns as a tuple instead of the pooled features, for dense downstream heads.
        use_recompute: recompute each block's activations in the backward pass (Paddle's
            recompute) instead of storing them: less memory for L and H models, ~30% more time.
        init: weight initialisation scheme, 'default' or 'jax' (see ``models/init.py``).
    """

    def __init__(self, arch: Optional[str] = None, patch_size: Optional[PositiveInt] = None,
                 hidden_dim: Optional[PositiveInt] = None, num_blocks: Optional[PositiveInt] = None,
                 tokens_mlp_dim: Optional[PositiveInt] = None,
                 channels_mlp_dim: Optional[PositiveInt] = None,
                 img_size: Union[PositiveInt, Sequence[PositiveInt]] = 224,
                 in_channels: PositiveInt = 3, gelu: Literal["tanh", "exact"] = "tanh",
                 norm_eps: PositiveFloat = 1e-6, drop_rate: DropRate = 0.0,
                 drop_path_rate: DropRate = 0.0, out_indices: Optional[Sequence[int]] = None,
                 use_recompute: bool = False, init: str = "default"):
        super().__init__()
        dims = resolve_dims(arch, patch_size=patch_size, hidden_dim=hidden_dim,
                            num_blocks=num_blocks, tokens_mlp_dim=tokens_mlp_dim,
                            channels_mlp_dim=channels_mlp_dim)
        if gelu not in ("tanh", "exact"):
            raise ConfigError(f"MlpMixer: gelu must be 'tanh' or 'exact', got {gelu!r}.")
        self.arch = arch
        self.patch_size = p = dims["patch_size"]
        self.img_size = _pair(img_size)
        h, w = self.img_size
        if h % p or w % p:
            raise ConfigError(f"MlpMixer: img_size {h}x{w} is not a multiple of patch_size {p}.")
        self.grid_size = (h // p, w // p)
        self.num_tokens = self.grid_size[0] * self.grid_size[1]
        self.in_channels = in_channels
        self.num_features = self.hidden_dim = dims["hidden_dim"]
        self.num_blocks = dims["num_blocks"]
        self.tokens_mlp_dim = dims["tokens_mlp_dim"]
        self.channels_mlp_dim = dims["channels_mlp_dim"]
        self.use_recompute = use_recompute

        self.stem = PatchStem(p, in_channels, self.hidden_dim)
        self.blocks = nn.LayerList([
            MixerBlock(self.num_tokens, self.hidden_dim, self.tokens_mlp_dim,
                       self.channels_mlp_dim, gelu=gelu, norm_eps=norm_eps,
                       drop_rate=drop_rate, drop_path=rate)
            for rate in linear_drop_path_rates(drop_path_rate, self.num_blocks)])
        self.norm = nn.LayerNorm(self.hidden_dim, epsilon=norm_eps)

        self.out_indices = None
        if out_indices is not None:
            n = self.num_blocks
            bad = [i for i in out_indices if not -n <= int(i) < n]
            if bad:
                raise ConfigError(f"MlpMixer: out_indices {bad} out of range for {n} blocks.")
            self.out_indices = sorted({int(i) % n for i in out_indices})
        init_weights(self, init)

    # -- input checking ---------------------------------------------------------------------
    def _check_input(self, x):
        expected = [self.in_channels, *self.img_size]
        shape = list(x.shape)
        # under paddle.jit.to_static unknown dimensions are -1: check only the known ones
        if len(shape) != 4 or any(a > 0 and a != e for a, e in zip(shape[1:], expected)):
            why = ""
            if len(shape) == 4 and shape[1] > 0 and shape[1] != self.in_channels:
                why = f" The channel count is {shape[1]}, not {self.in_channels}."
            elif len(shape) == 4 and any(s > 0 and s % self.patch_size for s in shape[2:]):
                why = f" {shape[2]}x{shape[3]} is not a multiple of the patch size {self.patch_size}."
            elif len(shape) == 4:
                why = (f" The token-mixing MLP was built for {self.num_tokens} tokens "
                       f"({self.img_size[0]}x{self.img_size[1]} in {self.patch_size}-pixel "
                       f"patches); build the model with img_size={shape[2]} (for pretrained "
                       f"weights, load_pretrained(..., img_size=...) changes their resolution) "
                       f"or resize the input.")
            raise ShapeError(f"MlpMixer expects input of shape [batch, {expected[0]}, "
                             f"{expected[1]}, {expected[2]}], got {shape}.{why}")

    # -- forward ----------------------------------------------------------------------------
    def _run_block(self, block, x):
        if self.use_recompute and self.training:
            from paddle.distributed.fleet.utils import recompute
            # use_reentrant=False (saved-tensor hooks): the default PyLayer version re-runs the
            # block inside its own backward, so under paddle.DataParallel the reducer sees the
            # block's parameters become ready twice ("parameter ... has been ready before");
            # Paddle's recompute docs name this the data-parallel-compatible form.
            # preserve_rng_state replays the forward's dropout / drop-path masks exactly.
            return recompute(block, x, use_reentrant=False, preserve_rng_state=True)
        return block(x)

    def forward_features(self, x):
        """Image [B, C_in, H, W] -> normalised tokens [B, S, hidden_dim]."""
        self._check_input(x)
        x = self.stem(x)
        for block in self.blocks:
            x = self._run_block(block, x)
        return self.norm(x)

    def forward_head(self, tokens):
        """Tokens [B, S, C] -> pooled features [B, C] (global average over tokens)."""
        return tokens.mean(axis=1)

    def forward_blocks(self, x, indices: Sequence[int]):
        """The raw outputs [B, S, C] of the blocks in ``indices`` (sorted, non-negative)."""
        self._check_input(x)
        x = self.stem(x)
        outs = []
        for i, block in enumerate(self.blocks):
            x = self._run_block(block, x)
            if i in indices:
                outs.append(x)
            if i == indices[-1]:
                break
        return tuple(outs)

    def forward(self, x):
        if self.out_indices is not None:
            return self.forward_blocks(x, self.out_indices)
        return self.forward_head(self.forward_features(x))

    # -- facts ------------------------------------------------------------------------------
    def macs(self) -> int:
        """Multiply-accumulates of one image through the backbone (matmuls and the stem conv;
        norms, activations and additions are a fraction of a percent and left out)."""
        s, c, p = self.num_tokens, self.hidden_dim, self.patch_size
        stem = s * c * self.in_channels * p * p
        token = c * 2 * s * self.tokens_mlp_dim
        channel = s * 2 * c * self.channels_mlp_dim
        return stem + self.num_blocks * (token + channel)


def resolve_dims(arch: Optional[str], **explicit) -> Dict[str, int]:
    """Merge an ``arch`` from the variants table with explicitly given dimensions."""
    if arch is not None:
        key = str(arch).lower().replace("/", "").replace("-", "")
        if key not in ARCHS:
            raise ConfigError(f"MlpMixer: unknown arch '{arch}'. Accepted: {', '.join(ARCHS)} "
                              f"(or give {', '.join(DIM_KEYS)} explicitly).")
        dims = dict(ARCHS[key])
    else:
        dims = {}
    dims.update({k: int(v) for k, v in explicit.items() if v is not None})
    missing = [k for k in DIM_KEYS if k not in dims]
    if missing:
        raise ConfigError(f"MlpMixer: without 'arch', all of {', '.join(DIM_KEYS)} are needed; "
                          f"missing {', '.join(missing)}.")
    return dims
