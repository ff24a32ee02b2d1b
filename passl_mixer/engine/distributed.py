"""Data-parallel helpers over Paddle's collective API (NCCL on GPU, gloo on CPU).

Launch with ``python -m paddle.distributed.launch --nproc_per_node N tools/train.py ...``: the
launcher sets the environment this module reads. A plain ``python tools/train.py`` is rank 0
of a world of one, and every helper here is then a no-op.
"""
from __future__ import annotations

import paddle
import paddle.distributed as dist

# the rank queries live below the logger (passl_mixer.ranks); the engine reaches all of its
# process-topology helpers through this module (``dist.is_main()``, ``dist.barrier()``)
from ..ranks import is_main, rank, world_size

__all__ = ["world_size", "rank", "is_main", "init", "all_reduce_", "barrier"]


_initialised = False


def init() -> None:
    """Initialise the process group once when launched with more than one process."""
    global _initialised
    if world_size() > 1 and not _initialised:
        dist.init_parallel_env()
        _initialised = True


def all_reduce_(tensor: paddle.Tensor, op: str = "sum") -> paddle.Tensor:
    """All-reduce a device tensor in place (``op``: "sum" or "min"), without reading it back
    (a no-op in one process); returns it."""
    if world_size() > 1:
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN}[op])
    return tensor


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
