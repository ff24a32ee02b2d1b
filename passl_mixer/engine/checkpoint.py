"""Checkpoint files: training state (``.pdckpt``) and model weights (``.pdparams``/``.safetensors``).

A training checkpoint is one file holding model, optimizer, LR scheduler, loss scaler and EMA
state, epoch and step, RNG states and the merged config. Files are written atomically (temp
file, fsync, rename): a process killed during a save leaves the previous checkpoint intact.

``.pdparams`` and ``.pdckpt`` files are Python pickles (Paddle's format): load only files you
trust. ``.safetensors`` files hold plain tensors and are safe to load from anywhere.
"""
from __future__ import annotations

import glob
import os
import re
from typing import Any, Dict, Optional

import numpy as np
import paddle

from ..errors import CheckpointError
from ..fileio import atomic_path

CKPT_EXT = ".pdckpt"


def save_checkpoint(state: Dict[str, Any], path: str) -> None:
    with atomic_path(path) as tmp:
        paddle.save(state, tmp)


def load_checkpoint(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint '{path}' does not exist.")
    try:
        state = paddle.load(path)
    except Exception as exc:  # noqa: BLE001 - paddle raises many kinds for a bad file
        raise CheckpointError(f"Cannot read checkpoint '{path}': it is truncated or not a Paddle "
                              f"checkpoint ({type(exc).__name__}: {exc}).") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"'{path}' is not a passl_mixer training checkpoint (no 'model' "
                              f"entry); for plain weights use load_weights().")
    return state


def save_weights(state_dict: Dict[str, Any], path: str) -> None:
    """Save model weights as ``.pdparams`` (pickle) or ``.safetensors`` (by the extension)."""
    with atomic_path(path) as tmp:
        if path.endswith(".safetensors"):
            try:
                from safetensors.numpy import save_file
            except ImportError:
                raise CheckpointError("Saving .safetensors needs the 'safetensors' package: "
                                      "pip install safetensors.") from None
            save_file({k: np.ascontiguousarray(_to_numpy(v)) for k, v in state_dict.items()}, tmp)
        else:
            paddle.save({k: v for k, v in state_dict.items()}, tmp)


def _to_numpy(v):
    return v.numpy() if isinstance(v, paddle.Tensor) else np.asarray(v)


def load_weights(path: str) -> Dict[str, np.ndarray]:
    """Model weights from a training checkpoint, a ``.pdparams`` state dict or ``.safetensors``."""
    if not os.path.isfile(path):
        raise CheckpointError(f"Weights file '{path}' does not exist.")
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise CheckpointError("Reading .safetensors needs the 'safetensors' package: "
                                  "pip install safetensors.") from None
        try:
            return dict(load_file(path))
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"Cannot read '{path}' as safetensors: {exc}") from None
    try:
        state = paddle.load(path)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"Cannot read weights '{path}': it is truncated or not a Paddle "
                              f"weights file ({type(exc).__name__}: {exc}).") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a training checkpoint: take the model out of it
    if not isinstance(state, dict):
        raise CheckpointError(f"'{path}' does not hold a state dict (got {type(state).__name__}).")
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


def list_some(items, n=5):
    """The first ``n`` items and the count, for error messages about many keys."""
    shown = ", ".join(items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}] ({len(items)} in all)"


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def epoch_checkpoints(output_dir: str):
    """(epoch, path) of the numbered checkpoints, oldest first."""
    found = []
    for path in glob.glob(os.path.join(checkpoint_dir(output_dir), f"epoch_*{CKPT_EXT}")):
        m = re.search(rf"epoch_(\d+){re.escape(CKPT_EXT)}$", path)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def find_resume_checkpoint(output_dir: str) -> Optional[str]:
    """The newest complete checkpoint in ``output_dir``: ``latest`` (written before the numbered
    and best ones are linked to it, so never older than them) if it reads, else the
    highest-numbered epoch file that reads. Temp files of interrupted saves are never chosen."""
    candidates = [os.path.join(checkpoint_dir(output_dir), f"latest{CKPT_EXT}")]
    candidates += [p for _, p in reversed(epoch_checkpoints(output_dir))]
    for path in candidates:
        if os.path.isfile(path):
            try:
                load_checkpoint(path)
                return path
            except CheckpointError:
                continue
    return None


def remove_torn_writes(output_dir: str) -> None:
    """Delete temp files of saves that were killed midway (they are never valid checkpoints)."""
    for path in glob.glob(os.path.join(checkpoint_dir(output_dir), ".*.tmp")):
        os.remove(path)


def prune_epoch_checkpoints(output_dir: str, keep_last: int) -> None:
    if keep_last <= 0:
        return
    for _, path in epoch_checkpoints(output_dir)[:-keep_last]:
        os.remove(path)
