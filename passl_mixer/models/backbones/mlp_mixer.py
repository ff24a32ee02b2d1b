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

Built on the shared skeleton (``base.py``): this file is the block, the variants table and the
checkpoint facts. Parameter names follow timm / PASSL v1 (``stem.proj``, ``blocks.{i}.norm1``,
``blocks.{i}.mlp_tokens.fc1``, ``blocks.{i}.mlp_channels.fc2``, ``norm``), so their state dicts
load with no renaming. Paddle keeps Linear weights as [in, out], like Flax's Dense kernels.
"""
from __future__ import annotations

from typing import Any, Dict, Literal, Optional, Sequence, Union

import numpy as np
import paddle.nn as nn

from ...registry import BACKBONES
from ...schema import DropRate, PositiveFloat, PositiveInt
from ..layers import DropPath, LayerNorm, Mlp, TokenMixingMlp
from .base import IsotropicBackbone, StateDictLayout, TokenParam, require_key

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


class MixerBlock(nn.Layer):
    def __init__(self, num_tokens: int, hidden_dim: int, tokens_mlp_dim: int,
                 channels_mlp_dim: int, gelu: str = "tanh", norm_eps: float = 1e-6,
                 drop_rate: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = LayerNorm(hidden_dim, epsilon=norm_eps)
        self.mlp_tokens = TokenMixingMlp(num_tokens, tokens_mlp_dim, gelu=gelu, drop=drop_rate)
        self.norm2 = LayerNorm(hidden_dim, epsilon=norm_eps)
        self.mlp_channels = Mlp(hidden_dim, channels_mlp_dim, gelu=gelu, drop=drop_rate)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):  # x: [B, S, C]
        x = self.drop_path.residual(x, self.mlp_tokens(self.norm1(x)))  # mixes along S
        return self.drop_path.residual(x, self.mlp_channels(self.norm2(x)))

    def macs(self) -> int:
        s, d_s = self.mlp_tokens.fc1.weight.shape
        c, d_c = self.mlp_channels.fc1.weight.shape
        return c * 2 * s * d_s + s * 2 * c * d_c


@BACKBONES.register()
class MlpMixer(IsotropicBackbone):
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
            returns as a tuple instead of the pooled features, for dense downstream heads
            (``forward_intermediates`` gives them without changing ``forward``).
        use_recompute: recompute each block's activations in the backward pass (Paddle's
            recompute) instead of storing them: less memory for L and H models, ~30% more time.
        init: weight initialisation scheme, 'default' or 'jax' (see ``models/init.py``).
    """
    ARCHS = ARCHS
    DIM_KEYS = DIM_KEYS
    TOKEN_MIXER = "token-mixing MLP"
    DEFAULT_GELU = "tanh"
    STATE_DICT = StateDictLayout(
        marker="blocks.0.mlp_tokens.fc1.weight",
        token_params=(TokenParam(r"blocks\.\d+\.mlp_tokens\.fc1\.weight", ("in", "hidden")),
                      TokenParam(r"blocks\.\d+\.mlp_tokens\.fc1\.bias", ("hidden",)),
                      TokenParam(r"blocks\.\d+\.mlp_tokens\.fc2\.weight", ("hidden", "out")),
                      TokenParam(r"blocks\.\d+\.mlp_tokens\.fc2\.bias", ("out",))))

    def __init__(self, arch: Optional[str] = None, patch_size: Optional[PositiveInt] = None,
                 hidden_dim: Optional[PositiveInt] = None, num_blocks: Optional[PositiveInt] = None,
                 tokens_mlp_dim: Optional[PositiveInt] = None,
                 channels_mlp_dim: Optional[PositiveInt] = None,
                 img_size: Union[PositiveInt, Sequence[PositiveInt]] = 224,
                 in_channels: PositiveInt = 3, gelu: Literal["tanh", "exact"] = "tanh",
                 norm_eps: PositiveFloat = 1e-6, drop_rate: DropRate = 0.0,
                 drop_path_rate: DropRate = 0.0, out_indices: Optional[Sequence[int]] = None,
                 use_recompute: bool = False, init: str = "default"):
        dims = self.resolve_dims(arch, patch_size=patch_size, hidden_dim=hidden_dim,
                                 num_blocks=num_blocks, tokens_mlp_dim=tokens_mlp_dim,
                                 channels_mlp_dim=channels_mlp_dim)
        super().__init__(dims["patch_size"], dims["hidden_dim"], dims["num_blocks"], img_size,
                         in_channels, use_recompute, gelu)
        self.arch = arch
        self.tokens_mlp_dim = int(dims["tokens_mlp_dim"])
        self.channels_mlp_dim = int(dims["channels_mlp_dim"])
        self.build_blocks(lambda rate: MixerBlock(
            self.num_tokens, self.hidden_dim, self.tokens_mlp_dim, self.channels_mlp_dim,
            gelu=gelu, norm_eps=norm_eps, drop_rate=drop_rate, drop_path=rate), drop_path_rate)
        self.finish_init(LayerNorm(self.hidden_dim, epsilon=norm_eps), out_indices, init)

    def set_inference_form(self, enable: bool) -> None:
        """The shared inference form, and the token-mixing MLPs without their output bias
        where that is exact: the bias adds one constant per token (the same for every
        channel) to the residual stream, and what reads the stream — each block's two
        LayerNorms, the next residual add, the final LayerNorm — either normalises over the
        channels, which removes a per-token constant, or passes it on to them. Without the bias,
        Paddle Inference folds the residual add into the token-mixing matmul (oneDNN
        ``fused_matmul`` with a residual), one pass over the activations less per block. Not
        where ``forward`` returns block outputs (``out_indices``), which no norm follows."""
        super().set_inference_form(enable)
        exact = self.out_indices is None and isinstance(self.norm, nn.LayerNorm) and all(
            isinstance(b.norm1, nn.LayerNorm) and isinstance(b.norm2, nn.LayerNorm)
            for b in self.blocks)
        for block in self.blocks:
            block.mlp_tokens.output_bias = not (enable and exact)

    @classmethod
    def block_dims_from_state_dict(cls, weights: Dict[str, np.ndarray], source: str
                                   ) -> Dict[str, Any]:
        tokens = require_key(weights, "blocks.0.mlp_tokens.fc1.weight", source, "MlpMixer")
        channels = require_key(weights, "blocks.0.mlp_channels.fc1.weight", source, "MlpMixer")
        return dict(tokens_mlp_dim=int(np.shape(tokens)[1]),
                    channels_mlp_dim=int(np.shape(channels)[1]),
                    num_tokens=int(np.shape(tokens)[0]))

