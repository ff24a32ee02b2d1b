"""Model weight files: ``.pdparams`` and ``.safetensors`` (and the model inside a ``.pdckpt``).

All weight I/O of the package is here: reading weights from any of those files (half precision
as float32), writing them atomically (temp file, fsync, rename), and loading them strictly into a
model. Training checkpoints (the whole run state) are :mod:`passl_mixer.engine.checkpoint`.

``.pdparams`` and ``.pdckpt`` files are Python pickles (Paddle's format): load only files you
trust. ``.safetensors`` files hold plain tensors and are safe to load from anywhere.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict

import numpy as np
import paddle

from ..errors import CheckpointError, list_some  # noqa: F401  (list_some: re-exported)
from ..fileio import atomic_path, describe_file, require_file

CKPT_EXT = ".pdckpt"
WEIGHTS_EXPECTED = "a .pdckpt training checkpoint, .pdparams or .safetensors weights file"
# looked for inside a directory given where a checkpoint or weights file belongs
WEIGHTS_INSIDE = (f"checkpoints/latest{CKPT_EXT}", f"latest{CKPT_EXT}", "model.pdparams",
                  "model.safetensors")


def unreadable_error(path: str, what: str, expected: str, exc: BaseException) -> CheckpointError:
    """The error for a file Paddle cannot read: what the file looks like, and Paddle's words."""
    kind = describe_file(path)
    looks = (f"it is {kind}" if not kind.startswith("a Python pickle") and "binary" not in kind
             else "it is truncated or not a Paddle file")
    hint = (" An official .npz or another framework's weights load through model.pretrained, or "
            "convert them with tools/convert_checkpoint.py." if kind.startswith("a zip") else "")
    return CheckpointError(f"Cannot read {what} '{path}': {looks} ({type(exc).__name__}: "
                           f"{exc}); expected {expected}.{hint}")


def save_weights(state_dict: Dict[str, Any], path: str) -> None:
    """Save model weights as ``.pdparams`` (pickle) or ``.safetensors`` (by the extension)."""
    with atomic_path(path, "weights") as tmp:
        if path.endswith(".safetensors"):
            try:
                from safetensors.numpy import save_file
            except ImportError:
                raise CheckpointError("Saving .safetensors needs the 'safetensors' package: "
                                      "pip install safetensors.") from None
            arrays = {k: np.ascontiguousarray(_to_numpy(v)) for k, v in state_dict.items()}
            try:
                save_file(arrays, tmp)
            except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type
                raise _as_os_error(exc) from None
        else:
            paddle.save({k: v for k, v in state_dict.items()}, tmp)


def _as_os_error(exc: BaseException) -> BaseException:
    """safetensors (Rust) reports a failed write as 'I/O error: ... (os error 27)': make that
    the OSError it is, so the atomic writer reports it as a write error; anything else as is."""
    m = re.search(r"os error (\d+)", str(exc))
    if isinstance(exc, OSError) or not m:
        return exc
    return OSError(int(m.group(1)), os.strerror(int(m.group(1))))


HALF_DTYPES = (paddle.float16, paddle.bfloat16)


def _to_numpy(v):
    """A state-dict value as a numpy array, half precision as float32: ``.numpy()`` of a
    bfloat16 tensor gives its raw bits as uint16 (numpy has no bfloat16), which any float
    model would read as integers (-0.848 -> 48985.0)."""
    if isinstance(v, paddle.Tensor):
        return (v.astype("float32") if v.dtype in HALF_DTYPES else v).numpy()
    return bfloat16_bits_to_float32(np.asarray(v))


def bfloat16_bits_to_float32(a: np.ndarray) -> np.ndarray:
    """Paddle stores a bfloat16 tensor's ``.numpy()`` (and ``paddle.load(return_numpy=True)``,
    and a bfloat16 safetensors entry written through it) as uint16 bit patterns: the upper
    half of a float32. No model weight is a uint16 integer, so such an array is converted
    explicitly (exactly: every bfloat16 is a float32) rather than numerically."""
    if a.dtype != np.uint16:
        return a
    return (a.astype(np.uint32) << 16).view(np.float32)


def float32_state_dict(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """``state_dict`` with float16/bfloat16 tensors as float32 ones (others as they are): what
    checkpoints hold, so that they load into any float32 model (AMP O2 keeps the weights in
    half precision; every half value is exactly representable in float32)."""
    return {k: v.astype("float32") if isinstance(v, paddle.Tensor) and v.dtype in HALF_DTYPES
            else v for k, v in state_dict.items()}


def load_weights(path: str, expected: str = WEIGHTS_EXPECTED) -> Dict[str, np.ndarray]:
    """Model weights from a training checkpoint, a ``.pdparams`` state dict or ``.safetensors``.
    ``expected`` describes the files the caller accepts, for error messages."""
    path = require_file(path, "Weights file", CheckpointError, expected, inside=WEIGHTS_INSIDE,
                        nonempty=True)
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise CheckpointError("Reading .safetensors needs the 'safetensors' package: "
                                  "pip install safetensors.") from None
        try:
            return {k: bfloat16_bits_to_float32(v) for k, v in load_file(path).items()}
        except Exception as exc:  # noqa: BLE001
            kind = describe_file(path)
            looks = ("it is truncated or damaged" if kind == "a safetensors file" or
                     "binary" in kind else f"it is {kind}")
            raise CheckpointError(f"Cannot read weights '{path}' as safetensors: {looks} ({exc}); "
                                  f"expected {expected}.") from None
    try:
        state = paddle.load(path)
    except Exception as exc:  # noqa: BLE001
        raise unreadable_error(path, "weights", expected, exc) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a training checkpoint: take the model out of it
    if not isinstance(state, dict):
        raise CheckpointError(f"'{path}' does not hold a state dict: it is {describe_file(path)}, "
                              f"read by Paddle as a {type(state).__name__}; expected {expected}.")
    return {k: _to_numpy(v) for k, v in state.items()}


def set_weights(model: paddle.nn.Layer, weights: Dict[str, Any], source: str = "weights") -> None:
    """Load ``weights`` into ``model`` strictly: any missing, unexpected or mis-shaped key is an
    error that names the parameter (and both shapes)."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    wrong = [f"{k}: model {list(own[k].shape)} vs {source} {list(np.shape(weights[k]))}"
             for k in own if k in weights and list(own[k].shape) != list(np.shape(weights[k]))]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {list_some(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {list_some(unexpected)}")
        if wrong:
            parts.append(f"shape mismatches {list_some(wrong)}")
        raise CheckpointError(f"{source} do not fit the model: {'; '.join(parts)}.")
    model.set_state_dict({k: paddle.to_tensor(np.asarray(_to_numpy(v)), dtype=own[k].dtype)
                          for k, v in weights.items()})
