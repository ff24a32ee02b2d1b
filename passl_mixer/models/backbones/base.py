"""The shared skeleton of the isotropic token-mixer backbones (Mixer, gMLP, ResMLP, FNet).

    image [B, C_in, H, W]
      -> embed: patch stem Conv2D(kernel = stride = patch)  -> tokens [B, S, C]
                (FNet adds its position embedding here)
      -> num_blocks x Block(drop_path = rate_i)              the family's block class
      -> norm                                                (forward_features ends here)
      -> mean over tokens                                    -> features [B, C]   (forward)

A family is a block class, a variants table and the few facts below; everything else — input
checks, stochastic depth growing linearly with depth (the MLP-Mixer paper's rule; PASSL, timm
and mmpretrain use one rate for every block), activation recompute, intermediate outputs for
dense heads, MACs, and the facts the checkpoint code needs — lives here once.

The API is timm's: ``forward_features(x)`` -> normalised tokens [B, S, C];
``forward_head(tokens, pre_logits=False)`` -> pooled features [B, C] (backbones own no
classifier: heads do); ``forward(x)`` -> pooled features; ``forward_intermediates(x, indices)``
-> chosen blocks' outputs; ``set_grad_checkpointing(enable)`` switches recompute at run time.

Checkpoint facts (``STATE_DICT``, ``dims_from_state_dict``) sit here, next to the model, so that
``checkpoints/`` (conversion, ``load_pretrained``, resolution change) needs no family's names.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import paddle
import paddle.nn as nn

from ... import cpu_kernels
from ...errors import CheckpointError, ConfigError, ShapeError, list_some
from ..init import init_weights
from ..layers import linear_product_grads, product_grads_apply


@dataclass(frozen=True)
class TokenParam:
    """A parameter indexed by tokens, which a change of resolution has to resize.

    ``pattern``: regular expression of its name relative to the backbone
    (``blocks\\.\\d+\\.mlp_tokens\\.fc1\\.weight``). ``axes``: one role per axis — ``"in"``
    (tokens read), ``"out"`` (tokens written), ``"hidden"`` (a hidden width that grows with the
    number of image parts in the block-diagonal construction) or ``None`` (left as it is).
    """
    pattern: str
    axes: Tuple[Optional[str], ...]

    def matches(self, name: str) -> bool:
        return re.fullmatch(self.pattern, name) is not None


@dataclass(frozen=True)
class StateDictLayout:
    """How a family's weights look in a state dict, names relative to the backbone.

    ``marker``: a key that only this family's state dicts have (it tells the family).
    ``token_params``: the parameters a resolution change resizes.
    ``blockdiag_exact``: whether the paper's block-diagonal enlargement computes the pretrained
    function on each image part (true when tokens meet only inside the token-indexed weights;
    false for FNet, whose Fourier mixing spans the whole grid).
    ``renames``: (regex, replacement) pairs from other code bases' names to ours, applied in
    order to every key (e.g. the official ResMLP code's ``attn.`` -> ``linear_tokens.``).
    """
    marker: str
    token_params: Tuple[TokenParam, ...] = ()
    blockdiag_exact: bool = True
    renames: Tuple[Tuple[str, str], ...] = ()

    def rename(self, key: str) -> str:
        """``key`` (relative to the backbone) in this package's names: ``renames`` in order."""
        for pattern, replacement in self.renames:
            key = re.sub(pattern, replacement, key)
        return key

    def token_param(self, key: str) -> Optional[TokenParam]:
        """The :class:`TokenParam` that ``key`` (relative to the backbone) is, or None."""
        return next((p for p in self.token_params if p.matches(key)), None)


@contextlib.contextmanager
def inference_forms(model: nn.Layer):
    """Within the block, every :class:`IsotropicBackbone` in ``model`` computes in its
    inference form (:meth:`IsotropicBackbone.set_inference_form`); trace inference programs
    (``paddle.jit.save``) inside it. The form is switched back on leaving, so a model being
    trained is left as it was."""
    backbones = [layer for layer in model.sublayers(include_self=True)
                 if isinstance(layer, IsotropicBackbone)]
    try:
        for backbone in backbones:
            backbone.set_inference_form(True)
        yield model
    finally:
        for backbone in backbones:
            backbone.set_inference_form(False)


def linear_drop_path_rates(drop_path_rate: float, num_blocks: int) -> List[float]:
    """The paper's rule: 0 at the first block, ``drop_path_rate`` at the last, linear between."""
    return [float(r) for r in np.linspace(0.0, drop_path_rate, num_blocks)]


def to_pair(v, name: str = "img_size") -> Tuple[int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ConfigError(f"{name} must be an int or [height, width], got {v!r}.")
        return int(v[0]), int(v[1])
    return int(v), int(v)


class PatchStem(nn.Layer):
    """Cut the image into non-overlapping patches and project each to ``hidden_dim``.

    ``as_matmul = True`` (set only while an inference program is traced, see
    :meth:`IsotropicBackbone.set_inference_form`) computes the same function as patches [B, S,
    C_in*p*p] times the flattened kernel: in a Paddle Inference program on CPU the convolution
    costs two layout reorders of its input and output more (oneDNN's convolution runs NHWC,
    the tokens are wanted as [B, S, C]) and a slower kernel than the matmul (S/16 batch 32,
    Sapphire Rapids: 20.7 ms -> 17.5 ms)."""
    as_matmul = False

    def __init__(self, patch_size: int, in_channels: int, hidden_dim: int):
        super().__init__()
        self.proj = nn.Conv2D(in_channels, hidden_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        proj = self.proj
        if self.as_matmul and all(d > 0 for d in x.shape[1:]):  # static C, H, W
            return self._patches_matmul(x)
        p = proj._kernel_size[0]
        if (product_grads_apply(self.training, x, proj.weight, proj.bias)
                and x.shape[2] % p == 0 and x.shape[3] % p == 0
                and cpu_kernels.ops() is not None):
            # Dygraph CPU training: the convolution as one product over the patches. Paddle's
            # CPU conv adds its bias and sums the bias gradient over [B, C, H/p, W/p] on one
            # core (Mixer-S/16, batch 16: 8 + 9.5 ms of the stem's 42 ms a step); the patch
            # copy (a kernel), one GEMM and the gradients as products take about half.
            patches = cpu_kernels.patchify(x, p)  # [B, S, C p p]
            weight = proj.weight.reshape([proj.weight.shape[0], -1]).t()
            return linear_product_grads(patches, weight, proj.bias)
        x = proj(x)                               # [B, C, H/p, W/p]
        return x.flatten(2).transpose([0, 2, 1])  # [B, S, C], tokens in row-major patch order

    def _patches_matmul(self, x):
        p = self.proj._kernel_size[0]
        c, h, w = x.shape[1:]
        # [B, C_in, h, p, w, p] -> [B, h, w, C_in, p, p]: one row per patch, row-major patch
        # order, each row in the kernel's (C_in, p, p) order
        patches = x.reshape([-1, c, h // p, p, w // p, p]).transpose([0, 2, 4, 1, 3, 5])
        # flatten, not reshape: Paddle Inference's bf16 passes break a transpose followed by a
        # reshape here (the matmul then sees the 6-D shape and predictor creation fails)
        patches = patches.flatten(3).flatten(1, 2)
        kernel = self.proj.weight.reshape([self.proj.weight.shape[0], -1])  # [C, C_in*p*p]
        return paddle.matmul(patches, kernel, transpose_y=True) + self.proj.bias


class IsotropicBackbone(nn.Layer):
    """Patch stem, ``num_blocks`` blocks of one width, final norm, average pooling.

    A family subclasses it, sets the class facts below, builds its blocks with
    :meth:`build_blocks` and finishes with :meth:`finish_init`.

    Class facts:
        ARCHS: variants table, ``arch`` name -> dimensions.
        DIM_KEYS: the dimensions an ``arch`` sets (all needed without one).
        TOKEN_MIXER: what ties the weights to one token count, for error messages
            ('token-mixing MLP'); None when any grid works (``dynamic_grid``).
        STATE_DICT: the family's :class:`StateDictLayout`.
        DEFAULT_GELU: the GELU form of the family's reference code ('tanh' or 'exact').
    """
    ARCHS: Dict[str, Dict[str, Any]] = {}
    DIM_KEYS: Tuple[str, ...] = ("patch_size", "hidden_dim", "num_blocks")
    TOKEN_MIXER: Optional[str] = None
    STATE_DICT: Optional[StateDictLayout] = None
    DEFAULT_GELU = "exact"
    dynamic_grid = False  # True: runs on any grid of whole patches (no token-indexed weights)

    def __init__(self, patch_size: int, hidden_dim: int, num_blocks: int,
                 img_size: Union[int, Sequence[int]], in_channels: int, use_recompute: bool,
                 gelu: str = "exact"):
        super().__init__()
        if gelu not in ("tanh", "exact"):  # the schema checks configs; this, direct calls
            raise ConfigError(f"{type(self).__name__}: gelu must be 'tanh' or 'exact', got "
                              f"{gelu!r}.")
        self.gelu = gelu
        self.patch_size = p = int(patch_size)
        self.img_size = to_pair(img_size)
        h, w = self.img_size
        if h % p or w % p:
            raise ConfigError(f"{type(self).__name__}: img_size {h}x{w} is not a multiple of "
                              f"patch_size {p}.")
        self.grid_size = (h // p, w // p)
        self.num_tokens = self.grid_size[0] * self.grid_size[1]
        self.in_channels = int(in_channels)
        self.num_features = self.hidden_dim = int(hidden_dim)
        self.num_blocks = int(num_blocks)
        self.use_recompute = bool(use_recompute)
        self.out_indices: Optional[List[int]] = None
        self.stem = PatchStem(p, self.in_channels, self.hidden_dim)

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def resolve_dims(cls, arch: Optional[str], **explicit) -> Dict[str, Any]:
        """Merge an ``arch`` from the variants table with explicitly given dimensions."""
        name = cls.__name__
        if arch is not None:
            key = str(arch).lower().replace("/", "").replace("-", "").replace("_", "")
            if key not in cls.ARCHS:
                raise ConfigError(f"{name}: unknown arch '{arch}'. Accepted: "
                                  f"{', '.join(cls.ARCHS)} (or give {', '.join(cls.DIM_KEYS)} "
                                  f"explicitly).")
            dims = dict(cls.ARCHS[key])
        else:
            dims = {}
        dims.update({k: v for k, v in explicit.items() if v is not None})
        missing = [k for k in cls.DIM_KEYS if k not in dims]
        if missing:
            raise ConfigError(f"{name}: without 'arch', all of {', '.join(cls.DIM_KEYS)} are "
                              f"needed; missing {', '.join(missing)}.")
        return dims

    def build_blocks(self, make_block: Callable[[float], nn.Layer], drop_path_rate: float):
        """``num_blocks`` blocks from ``make_block(drop_path)``, stochastic depth rising linearly."""
        self.blocks = nn.LayerList([make_block(rate) for rate in
                                    linear_drop_path_rates(drop_path_rate, self.num_blocks)])

    def finish_init(self, norm: nn.Layer, out_indices: Optional[Sequence[int]], init: str):
        """Set the final norm, check ``out_indices``, initialise the weights by ``init``."""
        self.norm = norm
        if out_indices is not None:
            self.out_indices = self._block_indices(out_indices, "out_indices")
        init_weights(self, init)

    def _block_indices(self, indices, what: str) -> List[int]:
        n = self.num_blocks
        if isinstance(indices, int):  # the last ``indices`` blocks, as timm
            if not 0 < indices <= n:
                raise ConfigError(f"{type(self).__name__}: {what} {indices} asks for the last "
                                  f"{indices} of {n} blocks.")
            return list(range(n - indices, n))
        bad = [i for i in indices if not -n <= int(i) < n]
        if bad:
            raise ConfigError(f"{type(self).__name__}: {what} {bad} out of range for {n} blocks.")
        return sorted({int(i) % n for i in indices})

    # -- input checking ---------------------------------------------------------------------
    def grid_of(self, shape) -> Tuple[int, int]:
        """The patch grid of an input of ``shape`` (checked; -1 dimensions under to_static
        are taken to be the built ones)."""
        self.check_input(shape)
        h, w = (s if s > 0 else d for s, d in zip(shape[2:], self.img_size))
        return h // self.patch_size, w // self.patch_size

    def check_input(self, shape):
        shape = list(shape)
        name, p = type(self).__name__, self.patch_size
        expected = [self.in_channels, *self.img_size]
        # under paddle.jit.to_static unknown dimensions are -1: check only the known ones
        if len(shape) != 4 or (shape[1] > 0 and shape[1] != self.in_channels):
            why = (f" The channel count is {shape[1]}, not {self.in_channels}."
                   if len(shape) == 4 else "")
            raise ShapeError(f"{name} expects input of shape [batch, {expected[0]}, "
                             f"{expected[1]}, {expected[2]}], got {shape}.{why}")
        if any(s > 0 and s % p for s in shape[2:]):
            raise ShapeError(f"{name} expects input of shape [batch, {expected[0]}, "
                             f"{expected[1]}, {expected[2]}], got {shape}. {shape[2]}x{shape[3]} "
                             f"is not a multiple of the patch size {p}.")
        if self.dynamic_grid:
            return
        if any(s > 0 and s != e for s, e in zip(shape[2:], expected[1:])):
            raise ShapeError(
                f"{name} expects input of shape [batch, {expected[0]}, {expected[1]}, "
                f"{expected[2]}], got {shape}. The {self.TOKEN_MIXER} was built for "
                f"{self.num_tokens} tokens ({expected[1]}x{expected[2]} in {p}-pixel patches); "
                f"build the model with img_size={shape[2] if shape[2] == shape[3] else shape[2:]} "
                f"(for pretrained weights, load_pretrained(..., img_size=...) changes their "
                f"resolution) or resize the input.")

    # -- forward ----------------------------------------------------------------------------
    def embed(self, x):
        """Image -> tokens [B, S, C] (the patch stem; families may add to it)."""
        return self.stem(x)

    def set_grad_checkpointing(self, enable: bool = True):
        """Recompute each block's activations in the backward pass instead of storing them
        (less memory for L and H models, ~30% more time); switchable at run time."""
        self.use_recompute = bool(enable)

    def run_block(self, block, x):
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
        self.check_input(x.shape)
        x = self.embed(x)
        for block in self.blocks:
            x = self.run_block(block, x)
        return self.norm(x)

    def forward_head(self, tokens, pre_logits: bool = False):
        """Tokens [B, S, C] -> pooled features [B, C] (global average over tokens). Backbones
        have no classifier (the head owns the classes), so ``pre_logits`` changes nothing; it
        is accepted for timm's API."""
        if self._inference_form and tokens.shape[1] > 0:
            # the mean as the product [1, S] @ [B, S, C]: Paddle Inference runs a mean over a
            # middle axis with its plain CPU kernel (3.5 ms for S/16 at batch 32 on Sapphire
            # Rapids), the product with oneDNN (0.5 ms)
            s = tokens.shape[1]
            weights = paddle.full([1, s], 1.0 / s, dtype=tokens.dtype)
            return paddle.matmul(weights, tokens).squeeze(1)
        return tokens.mean(axis=1)

    # -- the form traced into inference programs ---------------------------------------------
    _inference_form = False

    def set_inference_form(self, enable: bool) -> None:
        """Switch to (or back from) the form an inference program is traced in: the same
        function, in ops that Paddle Inference runs faster on CPU (the patch stem as a matmul,
        the token mean as a product). Families add their own (``MlpMixer``). Use
        :func:`inference_forms`, which switches back afterwards."""
        self._inference_form = bool(enable)
        self.stem.as_matmul = bool(enable)

    def forward_intermediates(self, x, indices: Union[None, int, Sequence[int]] = None,
                              norm: bool = False, output_fmt: str = "NLC",
                              intermediates_only: bool = False, stop_early: bool = False):
        """The outputs of the blocks in ``indices`` (None: all; an int n: the last n; negative
        indices count from the end), for dense heads; ``forward`` is unchanged.

        ``norm``: pass each through the final norm. ``output_fmt``: 'NLC' -> [B, S, C] or
        'NCHW' -> [B, C, h, w] over the patch grid. Returns ``(final tokens, [outputs])`` as
        ``forward_features`` gives them, or only the list with ``intermediates_only``;
        ``stop_early`` (with ``intermediates_only``) skips the blocks after the last index.
        """
        if output_fmt not in ("NLC", "NCHW"):
            raise ConfigError(f"output_fmt must be 'NLC' or 'NCHW', got {output_fmt!r}.")
        chosen = self._block_indices(range(self.num_blocks) if indices is None else indices,
                                     "indices")
        rows, cols = self.grid_of(x.shape)
        x = self.embed(x)
        outs = []
        last = chosen[-1] if intermediates_only and stop_early else self.num_blocks - 1
        for i, block in enumerate(self.blocks[:last + 1]):
            x = self.run_block(block, x)
            if i in chosen:
                y = self.norm(x) if norm else x
                if output_fmt == "NCHW":
                    y = y.transpose([0, 2, 1]).reshape([y.shape[0], self.hidden_dim, rows, cols])
                outs.append(y)
        if intermediates_only:
            return outs
        return self.norm(x), outs

    def forward(self, x):
        if self.out_indices is not None:
            return tuple(self.forward_intermediates(x, self.out_indices,
                                                    intermediates_only=True, stop_early=True))
        return self.forward_head(self.forward_features(x))

    # -- facts ------------------------------------------------------------------------------
    def macs(self) -> int:
        """Multiply-accumulates of one image through the backbone at the built resolution
        (matrix products and the stem conv; norms, activations and additions are a fraction
        of a percent and left out). Each block reports its own (``block.macs()``)."""
        p = self.patch_size
        stem = self.num_tokens * self.hidden_dim * self.in_channels * p * p
        return stem + sum(int(block.macs()) for block in self.blocks)

    @classmethod
    def dims_from_state_dict(cls, weights: Dict[str, np.ndarray], source: str = "the checkpoint"
                             ) -> Dict[str, Any]:
        """The constructor's dimensions (``DIM_KEYS``) plus ``in_channels`` and ``num_tokens``
        (the token count the weights were built for) from a state dict with names relative to
        the backbone. Families add their own dimensions in :meth:`block_dims_from_state_dict`."""
        stem = require_key(weights, "stem.proj.weight", source, cls.__name__)
        if np.ndim(stem) != 4 or np.shape(stem)[2] != np.shape(stem)[3]:
            raise CheckpointError(f"{source}: the stem weight has shape {list(np.shape(stem))}; "
                                  f"expected [hidden, in_channels, patch, patch].")
        blocks = sorted({int(m.group(1)) for k in weights
                         for m in [re.match(r"blocks\.(\d+)\.", k)] if m})
        if not blocks or blocks != list(range(len(blocks))):
            raise CheckpointError(f"{source}: {cls.__name__} block indices {blocks} are not "
                                  f"0..n-1.")
        dims = dict(patch_size=int(np.shape(stem)[2]), in_channels=int(np.shape(stem)[1]),
                    hidden_dim=int(np.shape(stem)[0]), num_blocks=len(blocks))
        dims.update(cls.block_dims_from_state_dict(weights, source))
        return dims

    @classmethod
    def block_dims_from_state_dict(cls, weights: Dict[str, np.ndarray], source: str
                                   ) -> Dict[str, Any]:
        """The family's own dimensions and ``num_tokens`` from a state dict (see above)."""
        raise NotImplementedError

    @classmethod
    def arch_of(cls, dims: Dict[str, Any]) -> Optional[str]:
        """The variant whose dimensions are ``dims`` (None if none is)."""
        return next((name for name, a in cls.ARCHS.items()
                     if all(dims.get(k) == v for k, v in a.items())), None)


def require_key(weights: Dict[str, Any], key: str, source: str, family: str):
    if key not in weights:
        raise CheckpointError(f"{source} has no '{key}', which every {family} checkpoint needs; "
                              f"keys found: {list_some(sorted(weights))}.")
    return weights[key]
