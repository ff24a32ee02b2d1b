"""ImageClassifier: backbone -> (optional neck) -> head.

Contract:
  * inference: ``model(images)`` -> logits [B, num_classes]; exported models use this.
  * training:  ``model(images, target)`` -> dict with ``loss`` (scalar to backpropagate) and
    metrics (``acc1``, ``acc5``, percent, over the batch). ``target`` is int64 labels [B] or
    soft targets [B, num_classes] (Mixup/CutMix). Passing the target through ``forward`` keeps
    the call inside ``paddle.DataParallel``'s forward, which data-parallel training needs.
  * ``freeze_backbone: true`` (linear probing): the backbone's parameters get
    ``stop_gradient`` (so the optimizer leaves them out) and it always runs in eval mode (no
    dropout or stochastic depth, BatchNorm running statistics kept); the neck and head train.
  * the training loop's hooks (hooks.py) do nothing.
"""
from __future__ import annotations

from typing import Dict, Optional, Union

import paddle.nn as nn

from ...registry import MODELS, build_backbone, build_head, build_neck
from ..layers import check_widths
from .hooks import TrainingHooks


@MODELS.register()
class ImageClassifier(TrainingHooks, nn.Layer):
    def __init__(self, backbone: Dict, head: Dict, neck: Optional[Dict] = None,
                 pretrained: Union[None, str, Dict] = None, freeze_backbone: bool = False):
        super().__init__()
        self.backbone = build_backbone(backbone)
        self.neck = build_neck(neck)
        self.head = build_head(head)
        check_widths(getattr(self.backbone, "num_features", None),
                     [("model.neck", self.neck), ("model.head", self.head)])
        self.pretrained = pretrained  # applied by passl_mixer.checkpoints.load_pretrained
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            for p in self.backbone.parameters():
                p.stop_gradient = True

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def extract_features(self, images):
        if self.freeze_backbone:
            # Set here rather than in train(): wrappers such as paddle.DataParallel switch the
            # mode of every sublayer directly, so an overridden train() would not be called.
            # The flags, not backbone.eval(), which also puts Paddle's global tracer in eval mode.
            for layer in [self.backbone, *self.backbone.sublayers()]:
                layer.training = False
        feats = self.backbone(images)
        return self.neck(feats) if self.neck is not None else feats

    def forward(self, images, target=None):
        logits = self.head(self.extract_features(images))
        if target is None:
            return logits
        return self.head.loss(logits, target)

    def reset_classifier(self, num_classes: int):
        self.head.reset(num_classes)
