"""Build a data loader from one ``data.train`` / ``data.val`` config section."""
from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

import paddle

from ..errors import ConfigError
from ..registry import DATASETS
from .sampler import DistributedBatchSampler

SECTION_KEYS = ("dataset", "transforms", "batch_size", "num_workers", "drop_last", "shuffle")


class Loader:
    """A ``paddle.io.DataLoader`` over a :class:`DistributedBatchSampler`, epoch-aware.

    Iterating yields ``[images, labels]``: a float32 ``[B, 3, H, W]`` and an int64 ``[B]``
    paddle Tensor, ``B`` = ``batch_size`` (smaller only in the last batch when ``drop_last``
    is false). Call ``set_epoch(epoch)`` before iterating each epoch: it picks the shuffle order
    and the augmentation seed, and the workers (not persistent) are started by each ``iter()``.

    Evaluation across ranks -- each sample must count exactly once. With ``drop_last: false``
    the last global batch is padded with repeated samples so every rank runs the same number
    of equally shaped batches. The trainer must do this:

        for k, (images, labels) in enumerate(loader):
            n = loader.num_valid(k)   # only the first n rows of this batch are real samples
            ... accumulate metric sums over images[:n], labels[:n] ...
        ... all-reduce (sum) the metric sums and the counts over ranks ...

    With ``drop_last: false`` (the val default) the summed count then equals
    ``loader.num_samples`` (= ``len(loader.dataset)``); ``drop_last: true`` drops the samples of
    the incomplete last global batch instead of padding it. Equivalently,
    all-gathering each batch's outputs in rank order, concatenating over batches and keeping the
    first ``loader.num_samples`` rows gives every sample once, in the sampler's global order.
    """

    def __init__(self, dataset, batch_sampler: DistributedBatchSampler, num_workers: int):
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.batch_size = batch_sampler.batch_size
        self.global_batch_size = batch_sampler.global_batch_size
        self.num_samples = len(dataset)
        # Shared memory off: it only saves one copy of each batch, and Paddle's shared-memory
        # path needs a large /dev/shm, which containers often do not have.
        self._loader = paddle.io.DataLoader(dataset, batch_sampler=batch_sampler,
                                            num_workers=num_workers, use_shared_memory=False,
                                            persistent_workers=False)

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    def num_valid(self, batch_index: int) -> int:
        """Real (not padding) rows at the start of this rank's ``batch_index``-th batch."""
        return self.batch_sampler.num_valid(batch_index)

    def __iter__(self) -> Iterator:
        return iter(self._loader)

    def __len__(self) -> int:
        return len(self.batch_sampler)


def build_dataloader(cfg: Dict[str, Any], train: bool, seed: int = 0,
                     world_size: Optional[int] = None, rank: Optional[int] = None) -> Loader:
    """Build the :class:`Loader` for one data section.

    ``cfg`` keys: ``dataset`` (a ``{name: ImageFolder|ImageList, ...}`` mapping), ``transforms``
    (list of transform mappings), ``batch_size`` (per device, required), ``num_workers``
    (default 0), ``drop_last`` and ``shuffle`` (default: true for ``train``, false otherwise).
    ``seed`` seeds both the shuffle and the augmentation. ``world_size``/``rank`` default to
    ``paddle.distributed.get_world_size()`` / ``get_rank()``.
    """
    if not isinstance(cfg, dict):
        raise ConfigError(f"A data section must be a mapping with keys {', '.join(SECTION_KEYS)}, "
                          f"got {type(cfg).__name__}: {cfg!r}.")
    unknown = [k for k in cfg if k not in SECTION_KEYS]
    if unknown:
        raise ConfigError(f"Unknown key(s) {', '.join(repr(k) for k in unknown)} in the "
                          f"{'train' if train else 'val'} data section. "
                          f"Accepted keys: {', '.join(SECTION_KEYS)}.")
    for key in ("dataset", "batch_size"):
        if key not in cfg:
            raise ConfigError(f"The {'train' if train else 'val'} data section needs a "
                              f"'{key}' key.")
    for key in ("transforms", "seed"):
        if isinstance(cfg["dataset"], dict) and key in cfg["dataset"]:
            raise ConfigError(f"'dataset' must not set '{key}': the loader passes it (transforms "
                              f"from the data section, seed from the run's seed).")
    num_workers = cfg.get("num_workers", 0)
    if not (isinstance(num_workers, int) and num_workers >= 0):
        raise ConfigError(f"num_workers must be an int >= 0, got {num_workers!r}.")
    world_size = paddle.distributed.get_world_size() if world_size is None else world_size
    rank = paddle.distributed.get_rank() if rank is None else rank

    dataset = DATASETS.build(cfg["dataset"], transforms=cfg.get("transforms"), seed=seed)
    sampler = DistributedBatchSampler(len(dataset), cfg["batch_size"], num_replicas=world_size,
                                      rank=rank, shuffle=cfg.get("shuffle", train), seed=seed,
                                      drop_last=cfg.get("drop_last", train))
    return Loader(dataset, sampler, num_workers)
