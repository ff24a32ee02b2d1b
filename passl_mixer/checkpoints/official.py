"""Google's published MLP-Mixer checkpoints (the Flax code's ``.npz``) in this package's names.

The official files (``Mixer-B_16.npz``, ``Mixer-L_16.npz``, ..., and the SAM / GSAM variants)
are flat NumPy archives whose keys are the Flax parameter paths joined with '/':

    stem/kernel                                   [kh, kw, in, C]   Conv kernel, HWIO
    stem/bias                                     [C]
    MixerBlock_{i}/LayerNorm_0/{scale,bias}       [C]               before token mixing
    MixerBlock_{i}/token_mixing/Dense_{0,1}/...   kernel [in, out], bias [out]
    MixerBlock_{i}/LayerNorm_1/{scale,bias}       [C]               before channel mixing
    MixerBlock_{i}/channel_mixing/Dense_{0,1}/... kernel [in, out], bias [out]
    pre_head_layer_norm/{scale,bias}              [C]
    head/{kernel,bias}                            [C, classes], [classes]   (absent in
                                                                             headless files)

Dense kernels are [in, out] like Paddle's Linear weights, so only the stem kernel is
transposed (to Paddle's OIHW). The Flax model tokenises with an NHWC conv flattened row-major
over (h, w) — the order ``PatchStem`` produces from NCHW — so no token permutation is needed.
"""
from __future__ import annotations

import re
from typing import Dict, Optional

import numpy as np

from ..errors import CheckpointError
from .weights import list_some

_RULES = [
    (re.compile(r"stem/(kernel|bias)"),
     lambda m: f"backbone.stem.proj.{_PARAM[m[1]]}"),
    (re.compile(r"MixerBlock_(\d+)/LayerNorm_([01])/(scale|bias)"),
     lambda m: f"backbone.blocks.{int(m[1])}.norm{int(m[2]) + 1}.{_PARAM[m[3]]}"),
    (re.compile(r"MixerBlock_(\d+)/(token|channel)_mixing/Dense_([01])/(kernel|bias)"),
     lambda m: (f"backbone.blocks.{int(m[1])}.mlp_{m[2]}s.fc{int(m[3]) + 1}."
                f"{_PARAM[m[4]]}")),
    (re.compile(r"pre_head_layer_norm/(scale|bias)"),
     lambda m: f"backbone.norm.{_PARAM[m[1]]}"),
    (re.compile(r"head/(kernel|bias)"),
     lambda m: f"head.fc.{_PARAM[m[1]]}"),
]
_PARAM = {"kernel": "weight", "scale": "weight", "bias": "bias"}


def is_official(keys) -> bool:
    """Whether an archive's keys are in the official layout (it has the stem kernel)."""
    return "stem/kernel" in keys


def official_name(key: str) -> Optional[str]:
    """This package's parameter name for an official key, or None if the key is not one."""
    for pattern, name in _RULES:
        m = pattern.fullmatch(key)
        if m:
            return name(m)
    return None


def read_official(npz, path: str) -> Dict[str, np.ndarray]:
    """Convert an open official archive (``np.load(..., allow_pickle=False)``) to a state dict
    with ImageClassifier names (``backbone.*``, ``head.fc.*``).

    Arrays are read one at a time and kept as read (no dtype cast, no copy) except the stem
    kernel, so the result costs about one checkpoint of memory.
    """
    unknown = [k for k in npz.files if official_name(k) is None]
    if unknown:
        raise CheckpointError(
            f"'{path}' looks like an official Mixer .npz (it has 'stem/kernel') but also holds "
            f"keys outside that layout: {list_some(unknown)}. Expected only stem/*, "
            f"MixerBlock_<i>/LayerNorm_<0|1>/*, MixerBlock_<i>/<token|channel>_mixing/"
            f"Dense_<0|1>/*, pre_head_layer_norm/* and head/*; re-export the parameters without "
            f"a path prefix or extra entries.")
    weights = {}
    for key in npz.files:
        array = read_member(npz, key, path)
        if key == "stem/kernel":
            if array.ndim != 4:
                raise CheckpointError(f"'{path}': stem/kernel has shape {list(array.shape)}; "
                                      f"expected 4 dimensions [kh, kw, in, out].")
            array = np.ascontiguousarray(array.transpose(3, 2, 0, 1))  # HWIO -> OIHW
        weights[official_name(key)] = array
    return weights


def read_member(npz, key: str, path: str) -> np.ndarray:
    """One array of an open ``.npz``, with a CheckpointError naming it if it cannot be read."""
    try:
        return npz[key]
    except Exception as exc:  # noqa: BLE001 - zipfile, numpy and OS errors all mean "corrupt"
        raise CheckpointError(
            f"Cannot read array '{key}' from '{path}': the archive is truncated or corrupt, or "
            f"the entry holds Python objects, which are refused (allow_pickle=False) "
            f"({type(exc).__name__}: {exc}).") from None

