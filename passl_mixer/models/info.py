"""Model accounting: parameter counts and multiply-accumulates (MACs) per image.

Shapes only: it works on models built under ``paddle.LazyGuard()`` (no memory for the weights),
as ``tools/model_info.py`` builds them.
"""
import math
from typing import Tuple

import paddle


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
