"""The training loop's loss and accuracy, summed on the device between log lines.

Reading a device tensor on the host (``float(loss)``) waits for every kernel queued before it:
one read per micro-batch makes the host wait for the device at every step, so it can no longer
queue the next step while the device computes. :class:`RunningSums` adds each micro-batch's
loss and accuracy into device scalars instead, and :meth:`RunningSums.read` brings them to the
host in one read, at log lines and before anything that needs them checked (a checkpoint).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import paddle

from . import distributed as dist


class WindowTotals(NamedTuple):
    """What :meth:`RunningSums.read` returns (over all ranks when read collectively)."""
    loss: float          # mean loss of the window's micro-batches (NaN or inf after a divergence)
    acc1: float          # mean accuracy (0.0 for models that report none)
    micro_batches: int   # micro-batches in the window, per rank
    # index in the window (0-based) of the first micro-batch whose loss was NaN or infinite
    # (on any rank, when read collectively); None: every loss was finite
    first_non_finite: Optional[int]


class RunningSums:
    """Device-side sums of the micro-batch losses and accuracies of a window of steps.

    ``add()`` queues a few scalar kernels and never reads back. The first non-finite loss is
    found without a read too: a sum that has become NaN or infinite stays so, so the number of
    micro-batches after which the loss sum is still finite is the position of the first
    non-finite loss in the window.
    """

    def __init__(self):
        self.micro_batches = 0  # a host count: known without reading the device
        self._loss_sum = paddle.zeros([], dtype="float32")
        self._acc1_sum = paddle.zeros([], dtype="float32")
        self._finite = paddle.zeros([], dtype="float32")  # see the class docstring

    def add(self, loss: paddle.Tensor, acc1=None) -> None:
        """One micro-batch's ``loss`` (a scalar tensor) and ``acc1`` (a scalar tensor, or None
        for models that report no accuracy)."""
        self._loss_sum = self._loss_sum + loss.detach().astype("float32").reshape([])
        if isinstance(acc1, paddle.Tensor):
            self._acc1_sum = self._acc1_sum + acc1.detach().astype("float32").reshape([])
        self._finite = self._finite + paddle.isfinite(self._loss_sum).astype("float32")
        self.micro_batches += 1

    def read(self, collective: bool) -> WindowTotals:
        """The window's totals, in one device->host read. ``collective``: over all ranks (sums
        all-reduced, the first non-finite position the earliest on any rank), so that every
        rank sees the same numbers and takes the same decisions; every rank must then call it
        at the same step. Otherwise this rank's own numbers."""
        if self.micro_batches == 0:
            return WindowTotals(0.0, 0.0, 0, None)
        sums = paddle.stack([self._loss_sum, self._acc1_sum]).astype("float64")
        finite = self._finite.reshape([1]).astype("float64")
        ranks = 1
        if collective:
            dist.all_reduce_(sums, "sum")
            dist.all_reduce_(finite, "min")
            ranks = dist.world_size()
        loss_sum, acc1_sum, finite_count = paddle.concat([sums, finite]).tolist()
        n = self.micro_batches * ranks
        first = None if finite_count >= self.micro_batches else int(finite_count)
        return WindowTotals(loss_sum / n, acc1_sum / n, self.micro_batches, first)
