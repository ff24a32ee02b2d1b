"""Changing the input resolution of pretrained Mixer weights.

Mixer has no position embeddings; what ties its weights to one resolution is the token-mixing
MLP, whose input and output width is the number of patches S (fc1.weight [S, D_S], fc2.weight
[D_S, S], fc2.bias [S] in Paddle's [in, out] layout). Fine-tuning at another resolution with
the same patch size needs new token-mixing weights. Two ways are offered:

``blockdiag`` — exact; the paper's method (Tolstikhin et al. 2021, Appendix C).
    For an image whose side is K times longer, S' = K²·S, and the hidden width D_S grows by K²
    too. The paper takes the token sequence of the larger image to be the concatenation of K²
    sequences of S tokens, obtained by cutting the image spatially into K x K equal parts, and
    initialises the larger W1 block-diagonally with K² copies of the pretrained W1 (and the
    other parameters likewise), so that the new MLP processes every part independently with
    the pretrained MLP.

    Here tokens stay in row-major order over the whole (K·h) x (K·w) patch grid, so instead of
    reordering tokens the copies are written at each part's token positions:
    :func:`subsequences` lists, for part j = a·K_w + b (row a, column b of the K x K cut), the
    S token indices of that part in row-major order *within the part* — the order the
    pretrained model gives the tokens of a whole h x w image. Up to that permutation of tokens
    the new W1 is block-diagonal. Part j uses hidden units j·D_S ... (j+1)·D_S - 1.

    Consequence: the new token mixing equals the pretrained token mixing on each part. Every
    other layer acts on each token alone, so the enlarged backbone computes, token for token,
    the pretrained backbone on each of the K² crops, and its pooled features are their mean.
    The side ratios may differ between height and width (K_h x K_w parts); each must be an
    integer.

``interpolate`` — an approximation, for ratios that are not integers (or to keep D_S).
    The weights indexed by tokens are resampled over the 2-D patch grid by bilinear
    interpolation (half-pixel centres, edges clamped): fc1.weight along its input axis,
    fc2.weight along its output axis, fc2.bias. The hidden width stays D_S. fc1.weight is then
    scaled by S / S', because each hidden unit now sums S' inputs instead of S: for a spatially
    smooth input this keeps the hidden pre-activations about where they were. The result is
    *not* the pretrained function — fine-tuning has to recover the difference.
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Tuple

import numpy as np

from ..errors import CheckpointError, ConfigError

Grid = Tuple[int, int]
METHODS = ("auto", "blockdiag", "interpolate")
_TOKEN_FC1 = re.compile(r"(.*mlp_tokens\.)fc1\.weight")


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


def blockdiag_token_mixing(mlp: Dict[str, np.ndarray], src: Grid, dst: Grid
                           ) -> Dict[str, np.ndarray]:
    """The paper's block-diagonal enlargement of one token-mixing MLP.

    ``mlp`` holds ``fc1.weight`` [S, D], ``fc1.bias`` [D], ``fc2.weight`` [D, S], ``fc2.bias``
    [S]; the result the same for S' = K_h·K_w·S tokens and K_h·K_w·D hidden units.
    """
    parts = subsequences(src, dst)
    n, s = parts.shape
    w1, b1, w2, b2 = (mlp[k] for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"))
    d = w1.shape[1]
    new_w1 = np.zeros((n * s, n * d), dtype=w1.dtype)
    new_w2 = np.zeros((n * d, n * s), dtype=w2.dtype)
    new_b2 = np.empty(n * s, dtype=b2.dtype)
    for j, tokens in enumerate(parts):
        hidden = slice(j * d, (j + 1) * d)
        new_w1[tokens, hidden] = w1
        new_w2[hidden, tokens] = w2
        new_b2[tokens] = b2
    return {"fc1.weight": new_w1, "fc1.bias": np.tile(b1, n), "fc2.weight": new_w2,
            "fc2.bias": new_b2}


def interpolate_token_mixing(mlp: Dict[str, np.ndarray], src: Grid, dst: Grid
                             ) -> Dict[str, np.ndarray]:
    """Resample one token-mixing MLP from a ``src`` to a ``dst`` patch grid (an approximation;
    see the module docstring). The hidden width is kept."""
    scale = (src[0] * src[1]) / (dst[0] * dst[1])
    return {"fc1.weight": _resample(mlp["fc1.weight"], 0, src, dst, scale),
            "fc1.bias": mlp["fc1.bias"],
            "fc2.weight": _resample(mlp["fc2.weight"], 1, src, dst),
            "fc2.bias": _resample(mlp["fc2.bias"], 0, src, dst)}


def _resample(array: np.ndarray, axis: int, src: Grid, dst: Grid, scale: float = 1.0
              ) -> np.ndarray:
    """Bilinearly resample ``array``'s token ``axis`` (row-major over ``src``) onto ``dst``,
    times ``scale``."""
    moved = np.moveaxis(array, axis, -1)
    grid = moved.reshape(moved.shape[:-1] + src)
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


def choose_method(method: str, src: Grid, dst: Grid, ckpt_hidden: int, model_hidden: int) -> str:
    """The resize method to use, checking that the model's token-mixing width fits it.

    ``auto`` takes ``blockdiag`` when the side ratios are integers and the model's width is
    K_h·K_w times the checkpoint's, else ``interpolate`` when the widths are equal.
    """
    if method not in METHODS:
        raise ConfigError(f"resize must be one of {', '.join(METHODS)}, got {method!r}.")
    ratio = integer_ratio(src, dst)
    change = f"{src[0]}x{src[1]} -> {dst[0]}x{dst[1]} patches"
    blockdiag_width = ratio[0] * ratio[1] * ckpt_hidden if ratio else None
    if method in ("auto", "blockdiag") and ratio and model_hidden == blockdiag_width:
        return "blockdiag"
    if method in ("auto", "interpolate") and model_hidden == ckpt_hidden:
        return "interpolate"
    if method == "blockdiag" and not ratio:
        raise CheckpointError(f"Block-diagonal resizing ({change}) needs each side of the patch "
                              f"grid to grow by an integer factor; use resize: interpolate "
                              f"(an approximation).")
    fits = []
    if blockdiag_width:
        fits.append(f"tokens_mlp_dim {blockdiag_width} with resize blockdiag or auto (exact; "
                    f"K = {ratio[0]}x{ratio[1]})")
    fits.append(f"tokens_mlp_dim {ckpt_hidden} with resize interpolate or auto (an "
                f"approximation)")
    raise CheckpointError(f"Cannot resize the checkpoint's token mixing ({change}, width "
                          f"{ckpt_hidden}) to the model's width {model_hidden} with resize: "
                          f"{method}. What fits (model.backbone.tokens_mlp_dim, "
                          f"model.pretrained.resize): {'; '.join(fits)}.")


def resize_token_mixing(weights: Dict[str, np.ndarray], src: Grid, dst: Grid, method: str
                        ) -> Dict[str, np.ndarray]:
    """A copy of the state dict ``weights`` with every block's token-mixing MLP resized from
    the ``src`` to the ``dst`` patch grid by ``method`` ('blockdiag' or 'interpolate')."""
    resize = {"blockdiag": blockdiag_token_mixing, "interpolate": interpolate_token_mixing}[method]
    out = dict(weights)
    for key in weights:
        m = _TOKEN_FC1.fullmatch(key)
        if m:
            prefix = m.group(1)
            names = [prefix + k for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")]
            missing = [n for n in names if n not in weights]
            if missing:
                raise CheckpointError(f"Cannot resize the token-mixing MLP: the checkpoint has "
                                      f"{key} but not {', '.join(missing)}.")
            mlp = {n[len(prefix):]: weights[n] for n in names}
            out.update({prefix + k: v for k, v in resize(mlp, src, dst).items()})
    return out
