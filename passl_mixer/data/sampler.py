"""A batch sampler whose batches do not depend on how many processes share them.

One *global* order of sample indices is made per epoch (a permutation from
``numpy.random.default_rng([seed, epoch])``, or 0..n-1 unshuffled) and cut into global batches
of ``batch_size * num_replicas``; rank r takes the r-th contiguous chunk of each. So the union of
every rank's k-th batch is exactly the k-th batch a single process with the global batch size
gets: a 2-process run sees the same data, step for step, as a 1-process run.
"""
from __future__ import annotations

import math
from typing import Iterator, List

import numpy as np
import paddle

from ..errors import DataError


class DistributedBatchSampler(paddle.io.BatchSampler):
    """Yield this rank's list of sample indices for each step of the epoch.

    ``drop_last=True``: the incomplete last global batch is dropped (every batch is full).
    ``drop_last=False``: the global order is padded by repeating its first indices until its
    length is a multiple of ``num_replicas``; the last global batch may be smaller than the
    others, but it is split evenly, so every rank runs the same number of batches and the
    ranks' k-th batches all have the same size. Padding only ever sits at the end of the
    global order; :meth:`num_valid` says how many rows of a batch are real samples.
    """

    def __init__(self, dataset_len: int, batch_size: int, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = True):
        # paddle.io.BatchSampler.__init__ wants a dataset or sampler; this class replaces all
        # of its behaviour, so it is not called (as in paddle.io.DistributedBatchSampler).
        for name, value, low in (("dataset_len", dataset_len, 1), ("batch_size", batch_size, 1),
                                 ("num_replicas", num_replicas, 1), ("seed", seed, 0)):
            if not (isinstance(value, (int, np.integer)) and value >= low):
                raise DataError(f"DistributedBatchSampler: {name} must be an int >= {low}, "
                                f"got {value!r}.")
        if not 0 <= rank < num_replicas:
            raise DataError(f"DistributedBatchSampler: rank {rank!r} is not in "
                            f"[0, num_replicas={num_replicas}).")
        self.dataset_len = int(dataset_len)
        self.batch_size = int(batch_size)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.global_batch_size = self.batch_size * self.num_replicas
        if self.drop_last and self.dataset_len < self.global_batch_size:
            raise DataError(f"The dataset has {self.dataset_len} samples, fewer than one global "
                            f"batch (batch_size {self.batch_size} x {self.num_replicas} "
                            f"processes = {self.global_batch_size}), so drop_last would leave no "
                            f"batch at all. Lower batch_size or set drop_last: false.")

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order to yield (the shuffle depends on it)."""
        self.epoch = int(epoch)

    @property
    def order_len(self) -> int:
        """Length of the epoch's global order after dropping or padding."""
        n, g = self.dataset_len, self.global_batch_size
        if self.drop_last:
            return n // g * g
        return math.ceil(n / self.num_replicas) * self.num_replicas

    def global_order(self) -> np.ndarray:
        """This epoch's sample indices, in the order all ranks together consume them."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.dataset_len)
        else:
            order = np.arange(self.dataset_len)
        # np.resize truncates, or repeats the order from its start to pad it.
        return np.resize(order, self.order_len)

    def _chunk(self, batch_index: int):
        """(start in the global order, length) of this rank's chunk of global batch k."""
        start = batch_index * self.global_batch_size
        local = min(self.global_batch_size, self.order_len - start) // self.num_replicas
        return start + self.rank * local, local

    def __iter__(self) -> Iterator[List[int]]:
        order = self.global_order()
        for k in range(len(self)):
            start, local = self._chunk(k)
            yield order[start:start + local].tolist()

    def __len__(self) -> int:
        return math.ceil(self.order_len / self.global_batch_size)

    def num_valid(self, batch_index: int) -> int:
        """How many leading rows of this rank's ``batch_index``-th batch are real samples.

        The remaining rows repeat samples only to pad the last global batch. Summed over all
        batches and ranks this is ``dataset_len`` (or fewer with ``drop_last``).
        """
        if not 0 <= batch_index < len(self):
            raise IndexError(f"batch_index {batch_index} is not in [0, {len(self)}).")
        start, local = self._chunk(batch_index)
        return int(np.clip(self.dataset_len - start, 0, local))
