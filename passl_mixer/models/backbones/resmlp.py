"""ResMLP (Touvron et al., 2021, "ResMLP: Feedforward networks for image classification with
data-efficient training").

    image [B, C_in, H, W]
      -> stem: Conv2D(kernel = stride = patch)                 -> tokens [B, S, C]
      -> num_blocks x ResBlock:
             x = x + DropPath(ls1 * linear_tokens(Affine(x)))      one Linear S -> S across the
                                                                   tokens, no activation
             x = x + DropPath(ls2 * mlp_channels(Affine(x)))       Linear C -> 4C, GELU, 4C -> C
      -> Affine                                                 (forward_features ends here)
      -> mean over tokens                                       -> features [B, C]   (forward)

``Affine`` is a per-channel ``alpha * x + beta`` in place of LayerNorm (no statistics, so it
folds into the next linear layer at inference). ``ls1`` / ``ls2`` are LayerScale: a learned
per-channel scale of each residual branch, started small so that deep stacks start close to
the identity. Its start value depends on depth; the official code
(facebookresearch/deit ``resmlp_models.py``) uses 0.1 for S12, 1e-5 for S24, 1e-6 for S36 and
for B24 (which has 24 blocks but is wider). timm's ``resmlp_12_224`` uses 1e-4 instead of 0.1
(its ResBlock default): the trained weights carry their own values, so this only matters when
training from scratch. GELU is the exact (erf) form, as in both codes.

Stochastic depth grows linearly from 0 at the first block to ``drop_path_rate`` at the last
(the shared skeleton's rule); the official code gives every block the same rate.

Parameter names follow timm (``stem.proj``, ``blocks.{i}.norm1.alpha``,
``blocks.{i}.linear_tokens``, ``blocks.{i}.mlp_channels.fc1``, ``norm``), except LayerScale,
which is a layer here: timm's ``blocks.{i}.ls1`` is our ``blocks.{i}.ls1.gamma``.
``STATE_DICT.renames`` maps timm's and the official code's names (``patch_embed.``, ``attn.``,
``mlp.``, ``gamma_1``) to ours. Paddle keeps Linear weights as [in, out]: ``linear_tokens``
is [S_in, S_out] (the transpose of PyTorch's [out, in]).
"""
from __future__ import annotations

from typing import Any, Dict, Literal, Optional, Sequence, Union

import numpy as np
import paddle.nn as nn

from ...errors import CheckpointError
from ...registry import BACKBONES
from ...schema import DropRate, PositiveFloat, PositiveInt
from ..init import constant_, init_weights, trunc_normal_
from ..layers import Affine, DropPath, LayerScale, Mlp, TokenLinear
from .base import IsotropicBackbone, StateDictLayout, TokenParam, require_key

# The paper's Table 1 / the official code's model functions (resmlp_12, resmlp_24, resmlp_36,
# resmlpB_24). Keys are the ``arch`` names accepted by ResMLP.
ARCHS: Dict[str, Dict[str, Any]] = {
    #     patch_size     hidden_dim C   num_blocks     channels_mlp_dim = 4C  LayerScale init
    "s12": dict(patch_size=16, hidden_dim=384, num_blocks=12, channels_mlp_dim=1536, init_values=0.1),
    "s24": dict(patch_size=16, hidden_dim=384, num_blocks=24, channels_mlp_dim=1536, init_values=1e-5),
    "s36": dict(patch_size=16, hidden_dim=384, num_blocks=36, channels_mlp_dim=1536, init_values=1e-6),
    "b24": dict(patch_size=8, hidden_dim=768, num_blocks=24, channels_mlp_dim=3072, init_values=1e-6),
}
DIM_KEYS = ("patch_size", "hidden_dim", "num_blocks", "channels_mlp_dim")


def default_init_values(num_blocks: int) -> float:
    """LayerScale's start value for a model of ``num_blocks`` blocks given without ``arch``:
    the official code's values by depth (0.1 up to 12 blocks, 1e-5 up to 24, 1e-6 deeper).
    The official B24 (24 blocks, width 768) uses 1e-6; ``arch='b24'`` sets it."""
    if num_blocks <= 12:
        return 0.1
    if num_blocks <= 24:
        return 1e-5
    return 1e-6


class ResBlock(nn.Layer):
    """One ResMLP block on tokens [B, S, C] (see the module docstring)."""

    def __init__(self, num_tokens: int, hidden_dim: int, channels_mlp_dim: int,
                 init_values: float, gelu: str = "exact", drop_rate: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__()
        self.norm1 = Affine(hidden_dim)
        self.linear_tokens = TokenLinear(num_tokens, num_tokens)  # weight [S_in, S_out]
        self.ls1 = LayerScale(hidden_dim, init_values)
        self.norm2 = Affine(hidden_dim)
        self.mlp_channels = Mlp(hidden_dim, channels_mlp_dim, gelu=gelu, drop=drop_rate)
        self.ls2 = LayerScale(hidden_dim, init_values)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):  # x: [B, S, C]
        x = self.drop_path.residual(x, self.ls1(self.linear_tokens(self.norm1(x))))  # mixes along S
        return self.drop_path.residual(x, self.ls2(self.mlp_channels(self.norm2(x))))

    def init_weights(self, scheme: str = "default"):
        """``default``: the official code's rule (every Linear weight truncated normal std 0.02,
        biases zero), with Affine 1 / 0 and LayerScale at ``init_values``. timm instead uses
        its Mixer rule (xavier-uniform, MLP biases normal 1e-6); the paper's recipe is the
        official code's. ``jax``: the generic lecun-normal rules of ``init.py``."""
        if scheme != "default":
            init_weights(self, scheme)
            return
        for fc in (self.linear_tokens, self.mlp_channels.fc1, self.mlp_channels.fc2):
            trunc_normal_(fc.weight, 0.02)
            constant_(fc.bias, 0.0)
        for layer in (self.norm1, self.norm2, self.ls1, self.ls2):
            layer.init_weights(scheme)

    def macs(self) -> int:
        s = self.linear_tokens.weight.shape[0]
        c, d = self.mlp_channels.fc1.weight.shape
        return c * s * s + s * 2 * c * d


@BACKBONES.register()
class ResMLP(IsotropicBackbone):
    """The ResMLP backbone. ``forward(x)`` returns pooled features [B, hidden_dim].

    Args:
        arch: one of ``ARCHS`` (s12, s24, s36, b24); explicit dimensions below override the
            arch's values, and without ``arch`` all four must be given.
        patch_size, hidden_dim, num_blocks: the stem's patch side, the width C, the depth.
        channels_mlp_dim: the channel MLP's hidden width (4 x hidden_dim in the paper).
        init_values: LayerScale's start value. None: the arch's (the official code's: S12 0.1,
            S24 1e-5, S36 and B24 1e-6), or without ``arch`` by depth: 0.1 up to 12 blocks,
            1e-5 up to 24, 1e-6 deeper. (timm starts resmlp_12 at 1e-4.)
        img_size: input side (int) or [height, width]; the token-mixing layer is built for it.
        in_channels: image channels.
        gelu: 'exact' (erf, as the official code and timm) or 'tanh'.
        drop_rate: dropout inside the channel MLP.
        drop_path_rate: stochastic depth of the last block; earlier blocks get linearly less.
        out_indices: block indices (negative allowed) whose outputs [B, S, C] ``forward``
            returns as a tuple instead of the pooled features, for dense downstream heads.
        use_recompute: recompute each block's activations in the backward pass instead of
            storing them (less memory, more time).
        init: 'default' (the official code's: Linear weights truncated normal 0.02, biases
            zero; the stem as in ``models/init.py``) or 'jax' (lecun-normal, see ``init.py``).
    """
    ARCHS = ARCHS
    DIM_KEYS = DIM_KEYS
    TOKEN_MIXER = "token-mixing linear layer"
    DEFAULT_GELU = "exact"
    STATE_DICT = StateDictLayout(
        marker="blocks.0.linear_tokens.weight",
        token_params=(TokenParam(r"blocks\.\d+\.linear_tokens\.weight", ("in", "out")),
                      TokenParam(r"blocks\.\d+\.linear_tokens\.bias", ("out",))),
        renames=(
            # timm: LayerScale is a bare parameter blocks.i.ls1, here a layer with ``gamma``
            (r"^(blocks\.\d+)\.ls([12])$", r"\1.ls\2.gamma"),
            # the official deit code (resmlp_models.py)
            (r"^patch_embed\.", "stem."),
            (r"^(blocks\.\d+)\.attn\.", r"\1.linear_tokens."),
            (r"^(blocks\.\d+)\.mlp\.", r"\1.mlp_channels."),
            (r"^(blocks\.\d+)\.gamma_([12])$", r"\1.ls\2.gamma"),
        ))

    def __init__(self, arch: Optional[str] = None, patch_size: Optional[PositiveInt] = None,
                 hidden_dim: Optional[PositiveInt] = None, num_blocks: Optional[PositiveInt] = None,
                 channels_mlp_dim: Optional[PositiveInt] = None,
                 init_values: Optional[PositiveFloat] = None,
                 img_size: Union[PositiveInt, Sequence[PositiveInt]] = 224,
                 in_channels: PositiveInt = 3, gelu: Literal["exact", "tanh"] = "exact",
                 drop_rate: DropRate = 0.0, drop_path_rate: DropRate = 0.0,
                 out_indices: Optional[Sequence[int]] = None, use_recompute: bool = False,
                 init: str = "default"):
        dims = self.resolve_dims(arch, patch_size=patch_size, hidden_dim=hidden_dim,
                                 num_blocks=num_blocks, channels_mlp_dim=channels_mlp_dim,
                                 init_values=init_values)
        super().__init__(dims["patch_size"], dims["hidden_dim"], dims["num_blocks"], img_size,
                         in_channels, use_recompute, gelu)
        self.arch = arch
        self.channels_mlp_dim = int(dims["channels_mlp_dim"])
        self.init_values = float(dims.get("init_values", default_init_values(self.num_blocks)))
        self.build_blocks(lambda rate: ResBlock(
            self.num_tokens, self.hidden_dim, self.channels_mlp_dim, self.init_values,
            gelu=gelu, drop_rate=drop_rate, drop_path=rate), drop_path_rate)
        self.finish_init(Affine(self.hidden_dim), out_indices, init)

    @classmethod
    def block_dims_from_state_dict(cls, weights: Dict[str, np.ndarray], source: str
                                   ) -> Dict[str, Any]:
        """``channels_mlp_dim`` and ``num_tokens``; LayerScale's init_values is not in the
        weights (the trained ``gamma`` values are)."""
        tokens = require_key(weights, "blocks.0.linear_tokens.weight", source, "ResMLP")
        channels = require_key(weights, "blocks.0.mlp_channels.fc1.weight", source, "ResMLP")
        if np.ndim(tokens) != 2 or np.shape(tokens)[0] != np.shape(tokens)[1]:
            raise CheckpointError(f"{source}: blocks.0.linear_tokens.weight has shape "
                                  f"{list(np.shape(tokens))}; expected [tokens, tokens].")
        return dict(channels_mlp_dim=int(np.shape(channels)[1]),
                    num_tokens=int(np.shape(tokens)[0]))

    @classmethod
    def arch_of(cls, dims: Dict[str, Any]) -> Optional[str]:
        """The variant whose dimensions (``DIM_KEYS``; init_values is not a dimension and is
        not in a state dict) are ``dims`` (None if none is)."""
        return next((name for name, a in cls.ARCHS.items()
                     if all(dims.get(k) == a[k] for k in cls.DIM_KEYS)), None)
