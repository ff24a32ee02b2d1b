"""BYOL (Grill et al., 2020, "Bootstrap Your Own Latent").

    view a ──online──> backbone -> projector -> predictor ─> p_a ┐
    view b ──target──> backbone -> projector (no gradient) ─> z_b ┘  2 - 2 cos(p_a, z_b)
    loss = that + the same with the views swapped

The target network is an exponential moving average of the online one (backbone and projector):
after every optimizer update ``target = tau * target + (1 - tau) * online``, with ``tau`` raised
from ``base_momentum`` to 1 on a cosine over the run, in :meth:`BYOL.after_step` (see hooks.py).
The target's BatchNorm layers use their own batch statistics, as in the paper (the update leaves
its running statistics alone: ``ema_update_(..., untrained="keep")``).

This module also holds the pieces MoCo v3 shares with BYOL (its momentum encoder is BYOL's
target network): :class:`ProjectedEncoder`, :func:`cosine_momentum`, :func:`frozen_copy`,
:func:`two_views`.

Downstream use takes the online backbone: state-dict keys ``online.backbone.*``
(:attr:`BYOL.BACKBONE_PREFIX`); the rest is pretraining machinery.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ...errors import ShapeError
from ...registry import MODELS, build_backbone, build_neck
from ...schema import Probability
from ..ema import ema_update_
from ..layers import check_widths
from .hooks import TrainingHooks


class ProjectedEncoder(nn.Layer):
    """backbone -> projector: image [B, C, H, W] -> embedding [B, D]."""

    def __init__(self, backbone: Dict, projector: Dict):
        super().__init__()
        self.backbone = build_backbone(backbone)
        self.projector = build_neck(projector)
        self.out_channels = check_widths(getattr(self.backbone, "num_features", None),
                                         [("model.projector", self.projector)])

    def forward(self, x):
        return self.projector(self.backbone(x))


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """The EMA rate after ``step`` of ``total_steps`` updates: ``base`` at step 0, rising on a
    half cosine to 1 at the end, ``1 - (1 - base) * (cos(pi * step / total) + 1) / 2``."""
    progress = min(1.0, step / max(1, total_steps))
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def frozen_copy(source: nn.Layer, copy: nn.Layer) -> nn.Layer:
    """Make ``copy`` (built from the same config as ``source``) an untrainable clone of it.

    Under ``paddle.LazyGuard`` the parameters have no values yet: each copied parameter then
    gets "take the source's value" as its initialiser, so initialise the source's parameters
    first (``model.parameters()`` lists them first).
    """
    if all(p._is_initialized() for p in source.parameters()):
        copy.set_state_dict(source.state_dict())
    else:
        sources = dict(source.named_parameters())
        for name, p in copy.named_parameters():
            p.set_init_func(lambda param, _block, src=sources[name]: param.set_value(src))
    for p in copy.parameters():
        p.stop_gradient = True  # the trainer leaves stop_gradient parameters out of the optimizer
    return copy


def two_views(views, method: str):
    """The two view batches of a ``[views, labels]`` batch from the MultiView dataset."""
    if not isinstance(views, (list, tuple)) or len(views) != 2:
        got = f"{len(views)} views" if isinstance(views, (list, tuple)) else \
            f"a {type(views).__name__} of shape {list(getattr(views, 'shape', []))}"
        raise ShapeError(f"{method} trains on two augmented views of each image, got {got}. "
                         f"Wrap the dataset in {{name: MultiView, views: [[...], [...]]}}.")
    return views


@MODELS.register()
class BYOL(TrainingHooks, nn.Layer):
    """BYOL with any registered backbone.

    Args:
        backbone: backbone config, e.g. ``{name: MlpMixer, arch: s16}``.
        projector, predictor: neck configs (``MLPNeck``; see models/necks/mlp.py).
        base_momentum: the target EMA rate tau at the start (0.996 in the paper).
    """

    BACKBONE_PREFIX = "online.backbone."

    def __init__(self, backbone: Dict, projector: Dict, predictor: Dict,
                 base_momentum: Probability = 0.996):
        super().__init__()
        self.online = ProjectedEncoder(backbone, projector)
        self.target = frozen_copy(self.online, ProjectedEncoder(backbone, projector))
        self.predictor = build_neck(predictor)
        check_widths(self.online.out_channels, [("model.predictor", self.predictor)])
        self.base_momentum = base_momentum
        self.momentum = base_momentum  # the rate of the latest update, for logs and tests

    def o2_float32_layers(self):
        """Layers that AMP O2 must leave in float32 (``paddle.amp.decorate(excluded_layers=)``):
        the target network, an average updated with rates up to 1 that half precision would
        round away."""
        return [self.target]

    @property
    def backbone(self) -> nn.Layer:
        """The backbone that downstream tasks use (the online one)."""
        return self.online.backbone

    @staticmethod
    def regression_loss(p, z):
        """Mean over the batch of ``2 - 2 cos(p, z)``, the squared distance of the unit vectors."""
        return (2.0 - 2.0 * (F.normalize(p, axis=1) * F.normalize(z, axis=1)).sum(axis=1)).mean()

    def forward(self, views: Sequence[paddle.Tensor], target=None) -> Dict[str, paddle.Tensor]:
        """``views``: two [B, C, H, W] batches of the same images; labels are ignored."""
        x1, x2 = two_views(views, "BYOL")
        p1 = self.predictor(self.online(x1))
        p2 = self.predictor(self.online(x2))
        with paddle.no_grad():
            z1, z2 = self.target(x1), self.target(x2)
        return {"loss": self.regression_loss(p1, z2) + self.regression_loss(p2, z1)}

    def after_step(self, step: int, total_steps: int) -> None:
        """Move the target towards the online network (after each optimizer update)."""
        self.momentum = cosine_momentum(self.base_momentum, step, total_steps)
        ema_update_(self.target, self.online, self.momentum, untrained="keep")
