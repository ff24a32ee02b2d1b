"""Changing the input resolution of pretrained weights, for any family.

The isotropic families have no resolution-specific weights except the few indexed by tokens,
which each family declares next to its model (``STATE_DICT.token_params``): a pattern of the
parameter's name and one role per axis — ``"in"`` (tokens read), ``"out"`` (tokens written),
``"hidden"`` (a hidden width) or ``None`` (untouched). In Paddle's [in, out] layout:

    MlpMixer  blocks.i.mlp_tokens.fc1.weight [S, D_S] ("in", "hidden"), fc1.bias [D_S]
              ("hidden",), fc2.weight [D_S, S] ("hidden", "out"), fc2.bias [S] ("out",)
    GMLP      blocks.i.mlp_channels.gate.proj.weight [S, S] ("in", "out"), .bias [S] ("out",)
    ResMLP    blocks.i.linear_tokens.weight [S, S] ("in", "out"), .bias [S] ("out",)
    FNet      pos_embed [1, S, C] (None, "out", None)

Fine-tuning at another resolution with the same patch size needs new values for them. Two
ways are offered:

``blockdiag`` — exact; the MLP-Mixer paper's method (Tolstikhin et al. 2021, Appendix C).
    For an image whose side is K times longer, S' = K²·S, and the hidden widths grow by K²
    too. The paper takes the token sequence of the larger image to be the concatenation of K²
    sequences of S tokens, obtained by cutting the image spatially into K x K equal parts, and
    initialises the larger W1 block-diagonally with K² copies of the pretrained W1 (and the
    other parameters likewise), so that the new MLP processes every part independently with
    the pretrained MLP. The same construction enlarges gMLP's and ResMLP's S x S token maps
    (no hidden axis: the diagonal blocks are the pretrained map).

    Here tokens stay in row-major order over the whole (K·h) x (K·w) patch grid, so instead of
    reordering tokens the copies are written at each part's token positions:
    :func:`subsequences` lists, for part j = a·K_w + b (row a, column b of the K x K cut), the
    S token indices of that part in row-major order *within the part* — the order the
    pretrained model gives the tokens of a whole h x w image. Each parameter starts at zero
    and, for every part j, gets the pretrained values at [part j's tokens on "in" and "out"
    axes, hidden units j·D ... (j+1)·D - 1 on "hidden" axes, everything on the others]. Up to
    that permutation of tokens the new weights are block-diagonal.

    Consequence: the new token mixing equals the pretrained token mixing on each part. Every
    other layer acts on each token alone, so the enlarged backbone computes, token for token,
    the pretrained backbone on each of the K² crops, and its pooled features are their mean.
    The side ratios may differ between height and width (K_h x K_w parts); each must be an
    integer. Families whose tokens also meet outside the token-indexed weights (FNet's Fourier
    mixing spans the whole grid) declare ``blockdiag_exact=False`` and are only interpolated.

``interpolate`` — an approximation, for ratios that are not integers (or to keep the widths).
    Every "in" and "out" axis is resampled over the 2-D patch grid by bilinear interpolation
    (half-pixel centres, edges clamped); hidden widths stay. Values along an "in" axis are then
    scaled by S / S', because each output now sums S' inputs instead of S: for a spatially
    smooth input this keeps the pre-activations about where they were. For the Mixer and the
    S x S maps the result is *not* the pretrained function — fine-tuning has to recover the
    difference; for FNet's position embedding it is the usual resampling.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import CheckpointError, ConfigError
from ..models.backbones.base import StateDictLayout
from ..models.backbones.mlp_mixer import MlpMixer

Grid = Tuple[int, int]
Axes = Tuple[Optional[str], ...]
METHODS = ("auto", "blockdiag", "interpolate")
TOKEN_AXES = ("in", "out")


def integer_ratio(src: Grid, dst: Grid) -> Optional[Grid]:
    """(K_h, K_w) if ``dst`` is ``src`` enlarged by integer factors in both sides, else None."""
    if dst[0] % src[0] or dst[1] % src[1] or dst[0] < src[0] or dst[1] < src[1]:
        return None
    return dst[0] // src[0], dst[1] // src[1]


def subsequences(src: Grid, dst: Grid) -> np.ndarray:
    """Token indices [K_h·K_w, S] of the parts of a ``dst`` grid cut into ``src``-sized parts.

    Row j lists part j = a·K_w + b (the part in row a, column b), its tokens in row-major
    order within the part; token indices are row-major over the whole ``dst`` grid.
    """
    ratio = integer_ratio(src, dst)
    if ratio is None:
        raise CheckpointError(f"A {dst[0]}x{dst[1]} patch grid cannot be cut into equal "
                              f"{src[0]}x{src[1]} parts.")
    (h, w), (kh, kw) = src, ratio
    index = np.arange(dst[0] * dst[1]).reshape(kh, h, kw, w)  # [a, row in part, b, col in part]
    return index.transpose(0, 2, 1, 3).reshape(kh * kw, h * w)


# -- one parameter -------------------------------------------------------------------------
def _check_axes(shape: Sequence[int], axes: Axes, tokens: int, name: str) -> None:
    if len(shape) != len(axes) or any(role in TOKEN_AXES and d != tokens
                                      for d, role in zip(shape, axes)):
        raise CheckpointError(f"Cannot resize {name}: its shape {list(shape)} does not fit the "
                              f"axis roles {list(axes)} for {tokens} tokens.")


def resized_shape(shape: Sequence[int], axes: Axes, src: Grid, dst: Grid, method: str
                  ) -> Tuple[int, ...]:
    """The shape a parameter of ``shape`` (axis roles ``axes``) gets from ``method``."""
    s_new = dst[0] * dst[1]
    parts = s_new // (src[0] * src[1])
    return tuple(s_new if role in TOKEN_AXES else
                 d * parts if role == "hidden" and method == "blockdiag" else d
                 for d, role in zip(shape, axes))


def blockdiag_param(array: np.ndarray, axes: Axes, src: Grid, dst: Grid, name: str = "a parameter"
                    ) -> np.ndarray:
    """The block-diagonal enlargement of one token-indexed parameter (see the module
    docstring): zeros, then for each image part j the pretrained values at part j's tokens
    ("in"/"out" axes) and hidden units j·D ... (j+1)·D - 1 ("hidden" axes)."""
    parts = subsequences(src, dst)
    _check_axes(array.shape, axes, parts.shape[1], name)
    out = np.zeros(resized_shape(array.shape, axes, src, dst, "blockdiag"), dtype=array.dtype)
    for j, tokens in enumerate(parts):
        index = [tokens if role in TOKEN_AXES else
                 np.arange(j * d, (j + 1) * d) if role == "hidden" else np.arange(d)
                 for d, role in zip(array.shape, axes)]
        out[np.ix_(*index)] = array
    return out


def interpolate_param(array: np.ndarray, axes: Axes, src: Grid, dst: Grid,
                      name: str = "a parameter") -> np.ndarray:
    """One token-indexed parameter resampled from the ``src`` to the ``dst`` patch grid: each
    "in"/"out" axis bilinearly, "in" axes scaled by S / S' (see the module docstring)."""
    _check_axes(array.shape, axes, src[0] * src[1], name)
    scale = (src[0] * src[1]) / (dst[0] * dst[1])
    for axis, role in enumerate(axes):
        if role in TOKEN_AXES:
            array = _resample(array, axis, src, dst, scale if role == "in" else 1.0)
    return array


def _resample(array: np.ndarray, axis: int, src: Grid, dst: Grid, scale: float = 1.0
              ) -> np.ndarray:
    """Bilinearly resample ``array``'s token ``axis`` (row-major over ``src``) onto ``dst``,
    times ``scale``."""
    moved = np.moveaxis(array, axis, -1)
    grid = moved.reshape(moved.shape[:-1] + tuple(src))
    out = scale * np.einsum("...hw,Hh,Ww->...HW", grid, _linear_weights(src[0], dst[0]),
                            _linear_weights(src[1], dst[1]))
    out = out.reshape(moved.shape[:-1] + (dst[0] * dst[1],)).astype(array.dtype)
    return np.moveaxis(out, -1, axis)


def _linear_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] linear-interpolation matrix, half-pixel centres, clamped at the edges."""
    x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1.0 - (x - lo))
    np.add.at(m, (np.arange(n_out), hi), x - lo)
    return m


RESIZE = {"blockdiag": blockdiag_param, "interpolate": interpolate_param}


# -- the Mixer's token-mixing MLP as one unit (the paper's presentation) ----------------------
def _mixer_axes(name: str) -> Axes:
    return MlpMixer.STATE_DICT.token_param(f"blocks.0.mlp_tokens.{name}").axes


def blockdiag_token_mixing(mlp: Dict[str, np.ndarray], src: Grid, dst: Grid
                           ) -> Dict[str, np.ndarray]:
    """The paper's block-diagonal enlargement of one Mixer token-mixing MLP: ``mlp`` holds
    ``fc1.weight`` [S, D], ``fc1.bias`` [D], ``fc2.weight`` [D, S], ``fc2.bias`` [S]; the
    result the same for S' = K_h·K_w·S tokens and K_h·K_w·D hidden units."""
    return {k: blockdiag_param(v, _mixer_axes(k), src, dst, k) for k, v in mlp.items()}


def interpolate_token_mixing(mlp: Dict[str, np.ndarray], src: Grid, dst: Grid
                             ) -> Dict[str, np.ndarray]:
    """One Mixer token-mixing MLP resampled from a ``src`` to a ``dst`` patch grid (an
    approximation); the hidden width is kept."""
    return {k: interpolate_param(v, _mixer_axes(k), src, dst, k) for k, v in mlp.items()}


# -- a whole state dict --------------------------------------------------------------------
def token_params(weights: Dict[str, np.ndarray], layout: StateDictLayout, prefix: str = ""
                 ) -> Dict[str, Axes]:
    """The keys of ``weights`` (``prefix`` + name relative to the backbone) that ``layout``
    declares token-indexed, with their axis roles."""
    found = {}
    for key in weights:
        if key.startswith(prefix):
            param = layout.token_param(key[len(prefix):])
            if param is not None:
                found[key] = param.axes
    return found


def resize_token_params(weights: Dict[str, np.ndarray], layout: StateDictLayout, src: Grid,
                        dst: Grid, method: str, prefix: str = "") -> Dict[str, np.ndarray]:
    """A copy of the state dict ``weights`` with every token-indexed parameter (``layout``'s,
    names ``prefix`` + relative to the backbone) resized from the ``src`` to the ``dst`` patch
    grid by ``method`` ('blockdiag' or 'interpolate')."""
    resize = RESIZE[method]
    out = dict(weights)
    for key, axes in token_params(weights, layout, prefix).items():
        out[key] = resize(np.asarray(weights[key]), axes, src, dst, key)
    return out


def resize_token_mixing(weights: Dict[str, np.ndarray], src: Grid, dst: Grid, method: str
                        ) -> Dict[str, np.ndarray]:
    """A copy of the state dict ``weights`` (ImageClassifier names ``backbone.*`` or a bare
    backbone's) with its family's token-indexed parameters resized from the ``src`` to the
    ``dst`` patch grid by ``method``; the family is told from the keys."""
    from .reader import BACKBONE, detect_family

    prefix = BACKBONE if any(k.startswith(BACKBONE) for k in weights) else ""
    family = detect_family([k[len(prefix):] for k in weights if k.startswith(prefix)],
                           "the state dict")
    return resize_token_params(weights, family.STATE_DICT, src, dst, method, prefix)


def choose_method(method: str, src: Grid, dst: Grid, params: Dict[str, Tuple[Sequence[int], Axes]],
                  model_shapes: Dict[str, Sequence[int]], blockdiag_exact: bool = True,
                  family: str = "the model", width_key: Optional[str] = None) -> str:
    """The resize method to use, checked against the model's own parameter shapes.

    ``params``: the checkpoint's token-indexed parameters, key -> (shape, axis roles);
    ``model_shapes``: the model's shapes under the same keys. ``auto`` takes ``blockdiag``
    when it is exact for the family (``blockdiag_exact``), the side ratios are integers and the
    enlarged shapes are the model's, else ``interpolate`` when its shapes are the model's.
    ``width_key``: the config key of the hidden width (the Mixer's ``tokens_mlp_dim``), for
    the error message; None: the message names the parameters' shapes.
    """
    if method not in METHODS:
        raise ConfigError(f"resize must be one of {', '.join(METHODS)}, got {method!r}.")
    ratio = integer_ratio(src, dst)
    change = f"{src[0]}x{src[1]} -> {dst[0]}x{dst[1]} patches"

    def mismatches(how):
        return [(k, list(resized_shape(shape, axes, src, dst, how)), list(model_shapes[k]))
                for k, (shape, axes) in params.items() if k in model_shapes
                and tuple(resized_shape(shape, axes, src, dst, how)) != tuple(model_shapes[k])]

    blockdiag_fits = bool(ratio) and blockdiag_exact and not mismatches("blockdiag")
    if method in ("auto", "blockdiag") and blockdiag_fits:
        return "blockdiag"
    if method in ("auto", "interpolate") and not mismatches("interpolate"):
        return "interpolate"
    if method == "blockdiag" and not ratio:
        raise CheckpointError(f"Block-diagonal resizing ({change}) needs each side of the patch "
                              f"grid to grow by an integer factor; use resize: interpolate "
                              f"(an approximation).")
    if method == "blockdiag" and not blockdiag_exact:
        raise CheckpointError(f"Block-diagonal resizing ({change}) is not exact for {family}: "
                              f"its tokens also meet outside the token-indexed weights; use "
                              f"resize: interpolate.")
    hidden = next(((k, axes.index("hidden")) for k, (_, axes) in params.items()
                   if "hidden" in axes and k in model_shapes), None)
    if width_key and hidden:
        key, axis = hidden
        ckpt_width, model_width = params[key][0][axis], model_shapes[key][axis]
        fits = []
        if ratio and blockdiag_exact:
            fits.append(f"{width_key} {ratio[0] * ratio[1] * ckpt_width} with resize blockdiag "
                        f"or auto (exact; K = {ratio[0]}x{ratio[1]})")
        fits.append(f"{width_key} {ckpt_width} with resize interpolate or auto (an "
                    f"approximation)")
        raise CheckpointError(f"Cannot resize the checkpoint's token mixing ({change}, width "
                              f"{ckpt_width}) to the model's width {model_width} with resize: "
                              f"{method}. What fits (model.backbone.{width_key}, "
                              f"model.pretrained.resize): {'; '.join(fits)}.")
    tried = ["blockdiag"] if ratio and blockdiag_exact else []
    tried.append("interpolate")
    found = "; ".join(f"{how} gives " + ", ".join(f"{k} {got} (the model's {want})"
                                                 for k, got, want in mismatches(how)[:2])
                      for how in tried)
    raise CheckpointError(f"Cannot resize the checkpoint's token-indexed weights ({change}) to "
                          f"{family}'s shapes with resize: {method}: {found}. Build the model "
                          f"with the checkpoint's other dimensions.")
