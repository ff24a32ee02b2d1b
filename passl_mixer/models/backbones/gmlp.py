"""gMLP (Liu et al., 2021, "Pay Attention to MLPs").

    image [B, C_in, H, W]
      -> stem: Conv2D(kernel = stride = patch)               -> tokens [B, S, C]
      -> num_blocks x SpatialGatingBlock:
             x = x + DropPath(fc2(SGU(GELU(fc1(LayerNorm(x))))))    fc1: C -> D, fc2: D/2 -> C
             SGU(z): u, v = z[..., :D/2], z[..., D/2:]              channels split in half
                     v = LayerNorm(v); v = W^T v + b over the S tokens (W: S x S)
                     return u * v                                   the spatial gate
      -> LayerNorm                                            (forward_features ends here)
      -> mean over tokens                                     -> features [B, C]   (forward)

The paper's vision models (its Table 1) use 30 blocks, 16-pixel patches, D = 6 C and exact GELU.
The gate's projection starts at weight ~ N(0, 1e-6), bias 1 (the paper's near-identity gate;
``layers.SpatialGatingUnit.init_weights``), so each block starts as an ordinary gated MLP.

Numerics follow timm's ``gmlp_*`` models, whose weights are the public gMLP checkpoints:
LayerNorm epsilon 1e-6 in the block and the final norm, PyTorch's default 1e-5 in the gating
unit. Stochastic depth grows linearly from 0 at the first block to ``drop_path_rate`` at the
last (the skeleton's rule; timm uses one rate for every block).

Built on the shared skeleton (``base.py``): this file is the block, the variants table and the
checkpoint facts. Parameter names are timm's (``stem.proj``, ``blocks.{i}.norm``,
``blocks.{i}.mlp_channels.fc1`` / ``.gate.norm`` / ``.gate.proj`` / ``.fc2``, ``norm``), so a timm
state dict maps 1:1 once its 2-D Linear weights are transposed ([out, in] -> Paddle's [in, out];
the checkpoint reader does that).
"""
from __future__ import annotations

from typing import Any, Dict, Literal, Optional, Sequence, Union

import numpy as np
import paddle.nn as nn

from ...errors import CheckpointError, ConfigError
from ...registry import BACKBONES
from ...schema import DropRate, PositiveFloat, PositiveInt
from ..layers import DropPath, GatedMlp, LayerNorm
from .base import IsotropicBackbone, StateDictLayout, TokenParam, require_key

# The paper's Table 1 (the vision models at 224x224), with timm's names gmlp_{ti16,s16,b16}_224.
# Keys are the ``arch`` names accepted by GMLP. channels_mlp_dim is fc1's width D = 6 C; the
# gate halves it, so fc2 reads D/2 = 3 C channels.
ARCHS: Dict[str, Dict[str, int]] = {
    #       patch_size     hidden_dim C    num_blocks      channels_mlp_dim D
    "ti16": dict(patch_size=16, hidden_dim=128, num_blocks=30, channels_mlp_dim=768),
    "s16": dict(patch_size=16, hidden_dim=256, num_blocks=30, channels_mlp_dim=1536),
    "b16": dict(patch_size=16, hidden_dim=512, num_blocks=30, channels_mlp_dim=3072),
}
DIM_KEYS = ("patch_size", "hidden_dim", "num_blocks", "channels_mlp_dim")


class SpatialGatingBlock(nn.Layer):
    """Pre-norm residual block around the gated channel MLP (timm's ``SpatialGatingBlock``)."""

    def __init__(self, num_tokens: int, hidden_dim: int, channels_mlp_dim: int,
                 gelu: str = "exact", norm_eps: float = 1e-6, gate_norm_eps: float = 1e-5,
                 drop_rate: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm = LayerNorm(hidden_dim, epsilon=norm_eps)
        self.mlp_channels = GatedMlp(hidden_dim, channels_mlp_dim, num_tokens, gelu=gelu,
                                     drop=drop_rate, gate_norm_eps=gate_norm_eps)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):  # x: [B, S, C]
        return self.drop_path.residual(x, self.mlp_channels(self.norm(x)))

    def macs(self) -> int:
        """Per image: fc1 S*C*D + gate S*S*(D/2) + fc2 S*(D/2)*C."""
        mlp = self.mlp_channels
        c, d = mlp.fc1.weight.shape
        s = mlp.gate.proj.weight.shape[0]
        return s * c * d + s * s * (d // 2) + s * (d // 2) * c


@BACKBONES.register()
class GMLP(IsotropicBackbone):
    """The gMLP backbone. ``forward(x)`` returns pooled features [B, hidden_dim].

    Args:
        arch: one of ``ARCHS`` (ti16, s16, b16); explicit dimensions below override the arch's
            values, and without ``arch`` all four must be given.
        patch_size, hidden_dim, num_blocks: the stem's patch side, the width C, the depth.
        channels_mlp_dim: fc1's output width D (6 C in the paper); must be even, since the
            spatial gating unit splits it into halves u, v.
        img_size: input side (int) or [height, width]; the gate's S x S projection is built
            for it.
        in_channels: image channels.
        gelu: 'exact' (erf, as the paper and timm) or 'tanh'.
        norm_eps: epsilon of the block's and the final LayerNorm (1e-6, as timm).
        gate_norm_eps: epsilon of the LayerNorm on v inside the gating unit (1e-5, as timm).
        drop_rate: dropout inside the gated MLP.
        drop_path_rate: stochastic depth of the last block; earlier blocks get linearly less.
        out_indices: block indices (negative allowed) whose outputs [B, S, C] ``forward``
            returns as a tuple instead of the pooled features, for dense downstream heads.
        use_recompute: recompute each block's activations in the backward pass.
        init: weight initialisation scheme, 'default' or 'jax' (see ``models/init.py``); the
            gate's projection gets weight N(0, 1e-6) and bias 1 under both.
    """
    ARCHS = ARCHS
    DIM_KEYS = DIM_KEYS
    TOKEN_MIXER = "spatial gating unit"
    DEFAULT_GELU = "exact"
    STATE_DICT = StateDictLayout(
        marker="blocks.0.mlp_channels.gate.proj.weight",
        token_params=(TokenParam(r"blocks\.\d+\.mlp_channels\.gate\.proj\.weight", ("in", "out")),
                      TokenParam(r"blocks\.\d+\.mlp_channels\.gate\.proj\.bias", ("out",))))

    def __init__(self, arch: Optional[str] = None, patch_size: Optional[PositiveInt] = None,
                 hidden_dim: Optional[PositiveInt] = None, num_blocks: Optional[PositiveInt] = None,
                 channels_mlp_dim: Optional[PositiveInt] = None,
                 img_size: Union[PositiveInt, Sequence[PositiveInt]] = 224,
                 in_channels: PositiveInt = 3, gelu: Literal["tanh", "exact"] = "exact",
                 norm_eps: PositiveFloat = 1e-6, gate_norm_eps: PositiveFloat = 1e-5,
                 drop_rate: DropRate = 0.0, drop_path_rate: DropRate = 0.0,
                 out_indices: Optional[Sequence[int]] = None, use_recompute: bool = False,
                 init: str = "default"):
        dims = self.resolve_dims(arch, patch_size=patch_size, hidden_dim=hidden_dim,
                                 num_blocks=num_blocks, channels_mlp_dim=channels_mlp_dim)
        if int(dims["channels_mlp_dim"]) % 2:
            raise ConfigError(f"GMLP: channels_mlp_dim {dims['channels_mlp_dim']} is odd; the "
                              f"spatial gating unit splits it into two equal halves.")
        super().__init__(dims["patch_size"], dims["hidden_dim"], dims["num_blocks"], img_size,
                         in_channels, use_recompute, gelu)
        self.arch = arch
        self.channels_mlp_dim = int(dims["channels_mlp_dim"])
        self.build_blocks(lambda rate: SpatialGatingBlock(
            self.num_tokens, self.hidden_dim, self.channels_mlp_dim, gelu=gelu,
            norm_eps=norm_eps, gate_norm_eps=gate_norm_eps, drop_rate=drop_rate,
            drop_path=rate), drop_path_rate)
        self.finish_init(LayerNorm(self.hidden_dim, epsilon=norm_eps), out_indices, init)

    @classmethod
    def block_dims_from_state_dict(cls, weights: Dict[str, np.ndarray], source: str
                                   ) -> Dict[str, Any]:
        channels = require_key(weights, "blocks.0.mlp_channels.fc1.weight", source, "GMLP")
        gate = require_key(weights, "blocks.0.mlp_channels.gate.proj.weight", source, "GMLP")
        if np.ndim(gate) != 2 or np.shape(gate)[0] != np.shape(gate)[1]:
            raise CheckpointError(f"{source}: blocks.0.mlp_channels.gate.proj.weight has shape "
                                  f"{list(np.shape(gate))}; expected [tokens, tokens] (the gate "
                                  f"maps S tokens to S tokens).")
        # Paddle layout: fc1.weight is [C, D], gate.proj.weight [S, S]
        return dict(channels_mlp_dim=int(np.shape(channels)[1]),
                    num_tokens=int(np.shape(gate)[0]))
