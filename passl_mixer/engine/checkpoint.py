"""Training checkpoints (``.pdckpt``): save, load and find the checkpoints of a run.

A training checkpoint is one file holding model, optimizer, LR scheduler, loss scaler and EMA
state, epoch and step, RNG states and the merged config. Files are written atomically (temp
file, fsync, rename): a process killed during a save leaves the previous checkpoint intact.
``.pdckpt`` files are Python pickles (Paddle's format): load only files you trust. Model
weights (``.pdparams``/``.safetensors``, or the model inside a checkpoint) are read and written
by :mod:`passl_mixer.checkpoints.weights`.
"""
from __future__ import annotations

import glob
import os
import re
from typing import Any, Dict, Optional

import paddle

from ..checkpoints.weights import CKPT_EXT, WEIGHTS_INSIDE, unreadable_error
from ..errors import CheckpointError
from ..fileio import atomic_path, describe_file, require_file

CHECKPOINT_EXPECTED = "a .pdckpt training checkpoint written by tools/train.py"


def save_checkpoint(state: Dict[str, Any], path: str) -> None:
    with atomic_path(path, "checkpoint") as tmp:
        paddle.save(state, tmp)


def load_checkpoint(path: str) -> Dict[str, Any]:
    path = require_file(path, "Checkpoint", CheckpointError, CHECKPOINT_EXPECTED,
                        inside=WEIGHTS_INSIDE[:2], nonempty=True)
    try:
        state = paddle.load(path)
    except Exception as exc:  # noqa: BLE001 - paddle raises many kinds for a bad file
        raise unreadable_error(path, "checkpoint", CHECKPOINT_EXPECTED, exc) from None
    if not isinstance(state, dict) or "model" not in state:
        got = ("a state dict without a 'model' entry" if isinstance(state, dict) else
               f"{describe_file(path)}, read by Paddle as a {type(state).__name__}")
        raise CheckpointError(f"'{path}' is not a passl_mixer training checkpoint: it is {got}; "
                              f"expected {CHECKPOINT_EXPECTED} (for plain weights use "
                              f"load_weights() / weights: PATH).")
    return state


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
