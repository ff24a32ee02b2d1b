"""Model accounting: parameter counts and multiply-accumulates (MACs) per image.

Shapes only: it works on models built under ``paddle.LazyGuard()`` (no memory for the weights),
as ``tools/model_info.py`` builds them.
"""
import math
from typing import Any, Dict, List, Tuple

import paddle

from ..registry import BACKBONES, build_model


def count_parameters(layer: paddle.nn.Layer) -> int:
    """The number of parameter values in ``layer`` (lazy parameters too: only shapes are read)."""
    return sum(math.prod(p.shape) for p in layer.parameters())


def classifier_macs(model) -> int:
    """MACs per image of an ImageClassifier: the backbone's plus the linear head's."""
    return model.backbone.macs() + model.backbone.num_features * model.num_classes


def describe_classifier(model) -> Tuple[int, int, float]:
    """(backbone parameters, total parameters, GMACs per image incl. the head) of an
    ImageClassifier."""
    return (count_parameters(model.backbone), count_parameters(model),
            classifier_macs(model) / 1e9)


def describe_variants(family: str, num_classes: int = 1000) -> List[Dict[str, Any]]:
    """One row per variant (``ARCHS``) of the registered backbone ``family``: the variant's
    dimensions, ``img_size`` and ``num_tokens`` at the family's default input size,
    ``backbone_params``, ``params`` with a ``num_classes``-class linear head, and ``gmacs`` per
    image (head included). Built under ``paddle.LazyGuard()``: no memory for the weights."""
    rows = []
    for arch, dims in BACKBONES.get(family).ARCHS.items():
        cfg = {"name": "ImageClassifier", "backbone": {"name": family, "arch": arch},
               "head": {"name": "LinearClsHead", "num_classes": num_classes,
                        "in_channels": dims["hidden_dim"]}}
        with paddle.LazyGuard():
            model = build_model(cfg)
        backbone_params, params, gmacs = describe_classifier(model)
        rows.append({"arch": arch, **dims, "img_size": list(model.backbone.img_size),
                     "num_tokens": model.backbone.num_tokens, "backbone_params": backbone_params,
                     "params": params, "gmacs": gmacs})
    return rows
