"""Models: importing this package registers every backbone, head, loss and architecture."""
from . import losses  # noqa: F401  (registers losses)
from .architectures.byol import BYOL
from .architectures.classifier import ImageClassifier
from .architectures.hooks import TrainingHooks
from .architectures.mocov3 import MoCoV3
from .backbones.base import IsotropicBackbone
from .backbones.fnet import FNet
from .backbones.gmlp import GMLP
from .backbones.mlp_mixer import ARCHS, MlpMixer
from .backbones.resmlp import ResMLP
from .heads.linear_cls_head import LinearClsHead
from .init import init_weights
from .layers import Affine, DropPath, GatedMlp, LayerScale, Mlp, SpatialGatingUnit, TokenLinear
from .necks.batch_norm import BatchNormNeck
from .necks.mlp import MLPNeck
from .necks.sync_bn import SyncBatchNorm, average_batchnorm_stats, convert_sync_batchnorm

__all__ = ["ARCHS", "MlpMixer", "FNet", "GMLP", "ResMLP", "IsotropicBackbone", "Affine", "GatedMlp", "LayerScale",
           "SpatialGatingUnit", "TokenLinear", "LinearClsHead", "ImageClassifier", "init_weights", "DropPath",
           "Mlp", "MLPNeck", "BatchNormNeck", "MoCoV3", "BYOL", "SyncBatchNorm",
           "convert_sync_batchnorm", "average_batchnorm_stats", "TrainingHooks"]
