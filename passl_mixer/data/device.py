"""The batch stage of a transform pipeline, run by the loader on the training device.

A pipeline's tail of :class:`~.transforms.Normalize` and :class:`~.transforms.RandomErasing`
is per-pixel arithmetic that a GPU does on a whole batch for next to nothing, while on the CPU
it costs as much as a JPEG decode and makes the batch 4 times larger (float32 instead of
uint8). So :func:`build_dataloader <.loader.build_dataloader>` splits every pipeline in two:

- the head (decode, crops, flips, RandAugment ... on PIL images) runs per sample in the loader's
  thread or worker processes, which hand over **uint8** [B, 3, H, W] arrays;
- the tail becomes a :class:`DeviceBatchStage` that the main process runs on each batch once it
  is a paddle Tensor on the current device (the GPU when there is one): cast to float32,
  normalise, erase.

Configs need no change: a transforms list that ends in ``Normalize`` (+ ``RandomErasing``) is
split this way automatically, and the loader yields the same float32 batches as before:

- normalisation is the same float32 arithmetic (``(x / scale - mean) / std``), so the numbers
  are equal;
- erasing draws its boxes and fills with :meth:`RandomErasing.draw` exactly as the per-sample
  transform does, from a generator of its own per sample, ``numpy.random.default_rng([seed,
  epoch, index, ERASE_STREAM + view])``: sample i's erasing is still a pure function of (seed,
  epoch, i), with the recipe's distribution, but not the same draw as when it ran after the
  sample's other random transforms on one generator.

A pipeline without Normalize gives the raw 0..255 values as float32, as before.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import paddle

from .transforms import Compose, Normalize, RandomErasing

# Added to the view number in the erasing generator's seed: apart from any sample's own
# [seed, epoch, index(, view)] generator.
ERASE_STREAM = 1_000_003


def split_batch_tail(pipeline: Compose) -> Tuple[Compose, List]:
    """(head, tail): ``tail`` is the pipeline's last Normalize with the RandomErasing after it
    (both exact classes: a subclass may do anything), when the pipeline ends that way; else
    the whole pipeline is the head and the tail is empty."""
    transforms = list(pipeline.transforms)
    start = len(transforms)
    while start > 0 and type(transforms[start - 1]) is RandomErasing:
        start -= 1
    if start == 0 or type(transforms[start - 1]) is not Normalize:
        return pipeline, []
    start -= 1
    return Compose(transforms[:start]), transforms[start:]


class DeviceBatchStage:
    """uint8 [B, 3, H, W] numpy batch -> float32 paddle Tensor, normalised and erased.

    ``transforms``: the tail from :func:`split_batch_tail` (may be empty: only the cast).
    ``view``: the view number of a multi-view dataset (0 otherwise), for the erasing seed.
    """

    def __init__(self, transforms: Sequence, seed: int, view: int = 0):
        self.normalize: Optional[Normalize] = None
        self.erasers: List[RandomErasing] = []
        for t in transforms:
            if type(t) is Normalize and self.normalize is None and not self.erasers:
                self.normalize = t
            elif type(t) is RandomErasing and self.normalize is not None:
                self.erasers.append(t)
            else:
                raise ValueError(f"DeviceBatchStage takes one Normalize and then RandomErasing, "
                                 f"got {list(transforms)!r}")
        self.seed = int(seed)
        self.view = int(view)

    def __call__(self, images: np.ndarray, indices: Sequence[int], epoch: int) -> paddle.Tensor:
        batch = paddle.to_tensor(images).astype("float32")  # 4x fewer bytes cross to the device
        if self.normalize is not None:
            batch = self.normalize.normalize(batch)
        if self.erasers:
            shape = batch.shape[1:]
            for row, index in enumerate(indices):
                rng = np.random.default_rng([self.seed, int(epoch), int(index),
                                             ERASE_STREAM + self.view])
                for eraser in self.erasers:
                    for top, left, h, w, fill in eraser.draw(shape, rng):
                        batch[row, :, top:top + h, left:left + w] = paddle.to_tensor(fill)
        return batch

    def __repr__(self) -> str:
        parts = [repr(t) for t in ([self.normalize] if self.normalize else []) + self.erasers]
        return f"DeviceBatchStage([{', '.join(parts)}])"
