"""The three points where the training loop calls into the model.

Every architecture the trainer trains inherits :class:`TrainingHooks` (``class
MyModel(TrainingHooks, nn.Layer)``) and overrides the hooks it needs; the others do nothing.
The trainer (passl_mixer/engine/trainer.py, ``Trainer.train``) calls them on every rank, on the
unwrapped model (not the ``paddle.DataParallel`` wrapper):

  * :meth:`~TrainingHooks.after_step` after each optimizer update (and the ``train.ema``
    update), e.g. MoCo v3 and BYOL move their momentum encoders there;
  * :meth:`~TrainingHooks.after_epoch` when an epoch's steps are done, before evaluation and the
    checkpoint;
  * :meth:`~TrainingHooks.after_evaluation` after an evaluation on ``data.val``, before the
    checkpoint.

Whatever a hook changes must live in the model's state dict (parameters, buffers) to survive a
resume: the checkpoint is written after all three.
"""
from __future__ import annotations

from typing import Dict


class TrainingHooks:
    """Mixin of the training-loop extension points; each does nothing by default."""

    def after_step(self, step: int, total_steps: int) -> None:
        """After optimizer update number ``step`` (1 after the first) of ``total_steps`` (the
        whole schedule's, even when ``train.max_steps`` stops the run earlier)."""

    def after_epoch(self, epoch: int) -> None:
        """After the steps of epoch number ``epoch`` (1 after the first)."""

    def after_evaluation(self, metrics: Dict[str, float]) -> None:
        """After evaluating the model: ``metrics`` has ``top1``, ``top5``, ``loss`` and
        ``num_samples`` (the model's own, not the ``train.ema`` copy's)."""
