"""Which process this is: world size and rank as set by ``paddle.distributed.launch``.

Plain environment reads with no Paddle import, so that every layer (the logger included) can
ask "am I rank 0?". A plain ``python tools/train.py`` is rank 0 of a world of one. The
collective helpers (init, all-reduce, barrier) are in :mod:`passl_mixer.engine.distributed`.
"""
from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def rank() -> int:
    return int(os.environ.get("PADDLE_TRAINER_ID", "0"))


def is_main() -> bool:
    return rank() == 0
