"""FNet for images (Lee-Thorp et al., 2021, "FNet: Mixing Tokens with Fourier Transforms"),
as adapted to images in the Keras example "Image classification with modern MLP models".

    image [B, C_in, H, W]
      -> stem: Conv2D(kernel = stride = patch)               -> tokens [B, S, C]
      -> + position embedding (learned, one per patch; resampled for another grid)
      -> num_blocks x FNetBlock (post-norm, as the example):
             x = LayerNorm(x + DropPath(Re(DFT_2D(x))))        2-D DFT over tokens and channels
             x = LayerNorm(x + DropPath(ffn(x)))                Dense(gelu) -> Dropout -> Dense
      -> (no final norm: every block already ends in one)    (forward_features ends here)
      -> mean over tokens                                     -> features [B, C]   (forward)

The token mixing has no parameters, so the backbone runs on any grid of whole patches
(``dynamic_grid``): an input whose patch grid differs from the built one gets the position
embedding resampled bilinearly over the patch grid (half-pixel centres, as
``paddle.nn.functional.interpolate(align_corners=False)``), and that is logged once per grid.
That runs, but it is not the trained function: the unnormalised DFT's size grows with the
token count, so the balance of mixing and residual shifts (a model trained with
configs/demo/fnet_digits.yaml: val top-1 95% at its 16 px, 59% at 24 px, 38% at 32 px, 47% at
12 px, same bilinear image resize): fine-tune at the new size. Exported programs take the size
they were exported for.

The Fourier mixing is computed as real matrix products, one per axis:
``Re(F_S X F_C) = C_S X C_C - S_S X S_C`` with ``C_n[j, k] = cos(2 pi j k / n)`` and
``S_n[j, k] = sin(2 pi j k / n)``. It is exact (equal to ``paddle.fft.fft2(x).real`` to float32
precision, see tests/test_fnet.py) and is only matmul and reshape, so it exports wherever
those do (Paddle Inference and ONNX are tested) and under AMP is an ordinary matmul.
Two products: ``X [C, 2C]`` gives ``[X C_C | X S_C]`` per token; read as [2S, C] rows (a
free reshape: rows alternate ``X C_C``, ``X S_C`` of one token) it is multiplied from the left
by ``[S, 2S]``, whose columns alternate ``C_S`` and ``-S_S``. The matrices are computed in
float64 NumPy and cast to float32, with ``j k mod n`` so the angles stay below 2 pi; they are
non-persistable buffers (not in the state dict; an export stores them with the program) shared
by all blocks.

Speed (2 CPU cores shared with other jobs, Paddle 3.3.1, batch 8; noisy): channels first, as
here, and tokens first ([2S, S] then [2C, C]) are within 15% of each other at 196 x 512 and
196 x 768, and channels first is 1.4-4x faster at 16 x 32. At 196 x 512 ``paddle.fft.fft2`` is
6-8x faster than either for the mixing alone (the FNet paper finds FFTs faster on GPU, the
matrices faster on TPU for short sequences); the whole FNet-S/16 (configs/fnet/, FFN 2048)
then runs inference in 4.0-4.1 s instead of 5.1-5.4 s per batch of 8, and a training step in
12-17 s either way (noise). ``fourier='fft'`` uses ``paddle.fft.fft2`` when running
eagerly (training); a traced program (``paddle.jit.to_static`` / export) always uses the matrix
products, so exported models are the same, with no complex ops, whichever is chosen.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ...errors import CheckpointError, ConfigError
from ...registry import BACKBONES
from ...schema import DropRate, PositiveFloat, PositiveInt
from ..init import init_weights as init_subtree
from ..init import is_lazy, trunc_normal_
from ..layers import DropPath, LayerNorm, Mlp
from .base import IsotropicBackbone, StateDictLayout, TokenParam, require_key

FOURIER_IMPLS = ("matmul", "fft")


def dft_cos_sin(n: int) -> Tuple[np.ndarray, np.ndarray]:
    """``cos`` and ``sin`` of ``2 pi j k / n`` for j, k < n, in float64 (symmetric matrices).
    ``j k mod n`` keeps the angle below 2 pi, where float64 is exact to ~1e-16."""
    jk = np.outer(np.arange(n), np.arange(n)) % n
    angle = (2.0 * np.pi / n) * jk
    return np.cos(angle), np.sin(angle)


def channel_dft_matrix(c: int) -> np.ndarray:
    """[C, 2C] = [C_C | S_C]: ``X @ it`` gives each token's ``X C_C`` and ``X S_C`` side by side."""
    cos, sin = dft_cos_sin(c)
    return np.concatenate([cos, sin], axis=1).astype("float32")


def token_dft_matrix(s: int) -> np.ndarray:
    """[S, 2S], columns alternating ``C_S`` and ``-S_S``: applied to [2S, C] rows that alternate
    ``X C_C`` and ``X S_C`` (token j at rows 2j, 2j+1) it gives ``C_S X C_C - S_S X S_C``."""
    cos, sin = dft_cos_sin(s)
    m = np.empty((s, 2 * s))
    m[:, 0::2] = cos
    m[:, 1::2] = -sin
    return m.astype("float32")


class FourierMixing(nn.Layer):
    """The real part of the 2-D DFT of [B, S, C] features over (S, C); no parameters.

    Built for ``num_tokens`` x ``hidden_dim``; another token count (another patch grid) gets its
    own token matrix, made on first use and kept. ``impl='fft'`` uses ``paddle.fft.fft2``
    when running eagerly (see the module docstring)."""

    def __init__(self, num_tokens: int, hidden_dim: int, impl: str = "matmul"):
        super().__init__()
        if impl not in FOURIER_IMPLS:
            raise ConfigError(f"FNet: fourier must be one of {', '.join(FOURIER_IMPLS)}, "
                              f"got {impl!r}.")
        self.num_tokens, self.hidden_dim, self.impl = int(num_tokens), int(hidden_dim), impl
        self.register_buffer("channel_dft", paddle.to_tensor(channel_dft_matrix(hidden_dim)),
                             persistable=False)
        self.register_buffer("token_dft", paddle.to_tensor(token_dft_matrix(num_tokens)),
                             persistable=False)
        self._token_dft_other: Dict[int, Any] = {}  # token count -> [S, 2S], other grids

    def token_matrix(self, s: int):
        # under paddle.jit.to_static an unknown token count (-1) is the built one
        if s < 0 or s == self.num_tokens:
            return self.token_dft
        if s not in self._token_dft_other:
            self._token_dft_other[s] = paddle.to_tensor(token_dft_matrix(s))
        return self._token_dft_other[s]

    def forward(self, x):  # x: [B, S, C] -> [B, S, C]
        if self.impl == "fft" and paddle.in_dynamic_mode():
            return paddle.fft.fft2(x.astype("float32").astype("complex64")).real().astype(x.dtype)
        s, c = x.shape[1], self.hidden_dim
        channel, token = self.channel_dft, self.token_matrix(s)
        if channel.dtype != x.dtype:  # e.g. a model cast to float16
            channel, token = channel.astype(x.dtype), token.astype(x.dtype)
        y = paddle.matmul(x, channel)                        # [B, S, 2C]: X C_C | X S_C
        return paddle.matmul(token, y.reshape([0, -1, c]))   # [S, 2S] @ [B, 2S, C]

    def macs(self, num_tokens: Optional[int] = None) -> int:
        s, c = num_tokens or self.num_tokens, self.hidden_dim
        return s * c * 2 * c + s * 2 * s * c

    def extra_repr(self):
        return f"num_tokens={self.num_tokens}, hidden_dim={self.hidden_dim}, impl={self.impl}"


class FNetBlock(nn.Layer):
    """The Keras example's FNetLayer: Fourier mixing, residual, LayerNorm; feed-forward
    (Dense(mlp_dim, gelu) -> Dropout -> Dense(C)), residual, LayerNorm. ``fourier`` is the
    backbone's shared :class:`FourierMixing` (one is made when None)."""

    def __init__(self, num_tokens: int, hidden_dim: int, mlp_dim: int, gelu: str = "exact",
                 norm_eps: float = 1e-6, drop_rate: float = 0.0, drop_path: float = 0.0,
                 fourier: Optional[FourierMixing] = None):
        super().__init__()
        self.fourier = fourier if fourier is not None else FourierMixing(num_tokens, hidden_dim)
        self.norm1 = LayerNorm(hidden_dim, epsilon=norm_eps)
        self.mlp = Mlp(hidden_dim, mlp_dim, gelu=gelu, drop=drop_rate)
        self.norm2 = LayerNorm(hidden_dim, epsilon=norm_eps)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):  # x: [B, S, C]
        x = self.norm1(self.drop_path.residual(x, self.fourier(x)))
        return self.norm2(self.drop_path.residual(x, self.mlp(x)))

    def macs(self) -> int:
        c, d = self.mlp.fc1.weight.shape
        s = self.fourier.num_tokens
        return self.fourier.macs() + s * 2 * c * d


@BACKBONES.register()
class FNet(IsotropicBackbone):
    """The FNet backbone for images. ``forward(x)`` returns pooled features [B, hidden_dim].

    Args:
        patch_size, hidden_dim, num_blocks: the patch side, the token width C, the depth.
        mlp_dim: the feed-forward block's hidden width (default ``hidden_dim``, as the Keras
            example, whose FFN is Dense(embedding_dim) -> Dense(embedding_dim)).
        img_size: input side (int) or [height, width] the position embedding is built for; any
            other multiple of ``patch_size`` also runs (the embedding is resampled).
        in_channels: image channels.
        gelu: 'exact' (Keras' "gelu", the default) or 'tanh'.
        norm_eps: LayerNorm epsilon (1e-6 as in the example).
        drop_rate: dropout inside the feed-forward block.
        drop_path_rate: stochastic depth of the last block's two residual branches; earlier
            blocks get linearly less.
        fourier: 'matmul' (the DFT as real matrix products, always used when traced/exported)
            or 'fft' (``paddle.fft.fft2`` when running eagerly: faster on CPU at ImageNet sizes).
        out_indices: block indices (negative allowed) whose outputs [B, S, C] ``forward``
            returns as a tuple instead of the pooled features, for dense downstream heads.
        use_recompute: recompute each block's activations in the backward pass.
        init: weight initialisation scheme, 'default' or 'jax' (see ``models/init.py``); the
            position embedding is truncated normal(0.02) under both.
    """
    DIM_KEYS = ("patch_size", "hidden_dim", "num_blocks")
    TOKEN_MIXER = None
    DEFAULT_GELU = "exact"
    dynamic_grid = True
    STATE_DICT = StateDictLayout(
        marker="pos_embed",
        token_params=(TokenParam(r"pos_embed", (None, "out", None)),),
        blockdiag_exact=False)

    def __init__(self, patch_size: PositiveInt, hidden_dim: PositiveInt, num_blocks: PositiveInt,
                 mlp_dim: Optional[PositiveInt] = None,
                 img_size: Union[PositiveInt, Sequence[PositiveInt]] = 224,
                 in_channels: PositiveInt = 3, gelu: Literal["tanh", "exact"] = "exact",
                 norm_eps: PositiveFloat = 1e-6, drop_rate: DropRate = 0.0,
                 drop_path_rate: DropRate = 0.0, fourier: Literal["matmul", "fft"] = "matmul",
                 out_indices: Optional[Sequence[int]] = None, use_recompute: bool = False,
                 init: str = "default"):
        dims = self.resolve_dims(None, patch_size=patch_size, hidden_dim=hidden_dim,
                                 num_blocks=num_blocks)
        super().__init__(dims["patch_size"], dims["hidden_dim"], dims["num_blocks"], img_size,
                         in_channels, use_recompute, gelu)
        self.mlp_dim = int(mlp_dim) if mlp_dim is not None else self.hidden_dim
        self.pos_embed = self.create_parameter(
            [1, self.num_tokens, self.hidden_dim],
            default_initializer=nn.initializer.TruncatedNormal(std=0.02))
        self._logged_grids = set()
        # one set of DFT matrices for every block (buffers, not in the state dict)
        fourier_mixing = FourierMixing(self.num_tokens, self.hidden_dim, fourier)
        self.build_blocks(lambda rate: FNetBlock(
            self.num_tokens, self.hidden_dim, self.mlp_dim, gelu=gelu, norm_eps=norm_eps,
            drop_rate=drop_rate, drop_path=rate, fourier=fourier_mixing), drop_path_rate)
        # post-norm blocks end in a LayerNorm: no final norm (the Keras example has none)
        self.finish_init(nn.Identity(), out_indices, init)
        self._init_pos_embed()

    def _init_pos_embed(self):
        if not is_lazy(self):
            trunc_normal_(self.pos_embed, 0.02)

    def init_weights(self, scheme: str = "default"):
        """Called by ``init.init_weights`` on a model holding this backbone: the generic rules
        for the layers, truncated normal(0.02) for the position embedding they do not know."""
        init_subtree(self, scheme)
        self._init_pos_embed()

    # -- forward ----------------------------------------------------------------------------
    def position_embedding(self, grid: Tuple[int, int]):
        """The position embedding [1, S, C] for a ``grid`` of patches: the built one, or it
        resampled bilinearly over the patch grid (half-pixel centres, edges clamped)."""
        if tuple(grid) == self.grid_size:
            return self.pos_embed
        if tuple(grid) not in self._logged_grids:
            self._logged_grids.add(tuple(grid))
            logging.getLogger("passl_mixer").info(
                "FNet: input patch grid %dx%d differs from the built %dx%d: position embedding "
                "resampled bilinearly", grid[0], grid[1], *self.grid_size)
        (h, w), c = self.grid_size, self.hidden_dim
        table = self.pos_embed.reshape([1, h, w, c]).transpose([0, 3, 1, 2])
        table = F.interpolate(table, size=list(grid), mode="bilinear", align_corners=False)
        return table.flatten(2).transpose([0, 2, 1])

    def embed(self, x):
        """Patch stem, plus the position embedding for the input's patch grid."""
        grid = self.grid_of(x.shape)
        tokens = self.stem(x)
        return tokens + self.position_embedding(grid).astype(tokens.dtype)

    # -- facts ------------------------------------------------------------------------------
    @classmethod
    def block_dims_from_state_dict(cls, weights: Dict[str, np.ndarray], source: str
                                   ) -> Dict[str, Any]:
        pos = require_key(weights, "pos_embed", source, "FNet")
        mlp = require_key(weights, "blocks.0.mlp.fc1.weight", source, "FNet")
        if np.ndim(pos) != 3 or np.shape(pos)[0] != 1:
            raise CheckpointError(f"{source}: pos_embed has shape {list(np.shape(pos))}; "
                                  f"expected [1, tokens, hidden].")
        return dict(mlp_dim=int(np.shape(mlp)[1]), num_tokens=int(np.shape(pos)[1]))

