"""Models: importing this package registers every backbone, head, loss and architecture."""
from . import losses  # noqa: F401  (registers losses)
from .architectures.classifier import ImageClassifier
from .backbones.mlp_mixer import ARCHS, MlpMixer
from .heads.linear_cls_head import LinearClsHead
from .init import init_weights
from .layers import DropPath, Mlp

__all__ = ["ARCHS", "MlpMixer", "LinearClsHead", "ImageClassifier", "init_weights", "DropPath",
           "Mlp"]
