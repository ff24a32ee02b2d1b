"""MoCo v3 (Chen, Xie and He, 2021, "An Empirical Study of Training Self-Supervised Vision
Transformers").

    view a ──base encoder──> backbone -> projector -> predictor ─> q_a ┐
    view b ──momentum encoder──> backbone -> projector (no grad) ─> k_b ┘ InfoNCE(q_a, k_b)
    loss = InfoNCE(q_1, k_2) + InfoNCE(q_2, k_1)

InfoNCE: the queries and keys are L2-normalised, ``logits = q @ k_all^T / temperature`` where
``k_all`` are the keys of the *global* batch (all-gathered over the data-parallel ranks, so the
other images of every rank are the negatives), and the positive of query i of rank r is key
``r * B + i``. The cross-entropy is scaled by ``2 * temperature`` as in the official code.

The momentum encoder is an exponential moving average of the base encoder (backbone and
projector), updated after every optimizer step with a momentum raised from ``base_momentum``
to 1 on a cosine (see :func:`~.byol.cosine_momentum`), in :meth:`MoCoV3.after_step` (see
hooks.py); its BatchNorm running statistics are its own (``ema_update_(..., untrained="keep")``).

Downstream use takes the base backbone: state-dict keys ``base_encoder.backbone.*``
(:attr:`MoCoV3.BACKBONE_PREFIX`).
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import paddle
import paddle.distributed as dist
import paddle.nn as nn
import paddle.nn.functional as F

from ...registry import MODELS, build_neck
from ...schema import PositiveFloat, Probability
from ..ema import ema_update_
from ..layers import check_widths
from .byol import ProjectedEncoder, cosine_momentum, frozen_copy, two_views
from .hooks import TrainingHooks


@paddle.no_grad()
def gather_keys(keys: paddle.Tensor) -> paddle.Tensor:
    """The keys of all ranks, concatenated in rank order: [world_size * B, D].

    Keys carry no gradient, so a plain all-gather is enough (as in MoCo's concat_all_gather).
    """
    if dist.get_world_size() == 1:
        return keys
    parts = []
    dist.all_gather(parts, keys)
    return paddle.concat(parts, axis=0)


@MODELS.register()
class MoCoV3(TrainingHooks, nn.Layer):
    """MoCo v3 with any registered backbone.

    Args:
        backbone: backbone config, e.g. ``{name: MlpMixer, arch: s16}``.
        projector, predictor: neck configs (``MLPNeck``; see models/necks/mlp.py).
        temperature: InfoNCE temperature (0.2 for ViT in the paper).
        base_momentum: the momentum encoder's EMA rate at the start (0.99 for ViT).
    """

    BACKBONE_PREFIX = "base_encoder.backbone."

    def __init__(self, backbone: Dict, projector: Dict, predictor: Dict,
                 temperature: PositiveFloat = 0.2, base_momentum: Probability = 0.99):
        super().__init__()
        self.base_encoder = ProjectedEncoder(backbone, projector)
        self.momentum_encoder = frozen_copy(self.base_encoder,
                                            ProjectedEncoder(backbone, projector))
        self.predictor = build_neck(predictor)
        check_widths(self.base_encoder.out_channels, [("model.predictor", self.predictor)])
        self.temperature = temperature
        self.base_momentum = base_momentum
        self.momentum = base_momentum  # the rate of the latest update, for logs and tests

    def o2_float32_layers(self):
        """Layers that AMP O2 must leave in float32 (``paddle.amp.decorate(excluded_layers=)``):
        the momentum encoder, an average updated with rates up to 1 that half precision would
        round away."""
        return [self.momentum_encoder]

    @property
    def backbone(self) -> nn.Layer:
        """The backbone that downstream tasks use (the base one)."""
        return self.base_encoder.backbone

    def contrastive_logits(self, q, k) -> Tuple[paddle.Tensor, paddle.Tensor]:
        """(logits [B, world_size * B], labels [B]) of this rank's queries against all keys."""
        q = F.normalize(q, axis=1)
        k = gather_keys(F.normalize(k, axis=1))
        logits = paddle.matmul(q, k, transpose_y=True) / self.temperature
        b = q.shape[0]
        labels = paddle.arange(b, dtype="int64") + b * dist.get_rank()
        return logits, labels

    def contrastive_loss(self, q, k) -> Tuple[paddle.Tensor, paddle.Tensor]:
        """(InfoNCE loss, top-1 accuracy in percent of finding the positive key)."""
        logits, labels = self.contrastive_logits(q, k)
        loss = F.cross_entropy(logits, labels) * (2.0 * self.temperature)
        acc = (logits.argmax(axis=1) == labels).astype("float32").mean() * 100.0
        return loss, acc

    def forward(self, views: Sequence[paddle.Tensor], target=None) -> Dict[str, paddle.Tensor]:
        """``views``: two [B, C, H, W] batches of the same images; labels are ignored.
        ``acc1`` is how often a query's nearest key is its positive (a progress signal)."""
        x1, x2 = two_views(views, "MoCoV3")
        q1 = self.predictor(self.base_encoder(x1))
        q2 = self.predictor(self.base_encoder(x2))
        with paddle.no_grad():
            k1, k2 = self.momentum_encoder(x1), self.momentum_encoder(x2)
        loss_12, acc_12 = self.contrastive_loss(q1, k2)
        loss_21, acc_21 = self.contrastive_loss(q2, k1)
        return {"loss": loss_12 + loss_21, "acc1": (acc_12 + acc_21) / 2.0}

    def after_step(self, step: int, total_steps: int) -> None:
        """Move the momentum encoder towards the base encoder (after each optimizer update)."""
        self.momentum = cosine_momentum(self.base_momentum, step, total_steps)
        ema_update_(self.momentum_encoder, self.base_encoder, self.momentum, untrained="keep")
