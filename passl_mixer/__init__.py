"""passl-mixer: MLP-Mixer for PaddlePaddle, built from YAML through registries."""
import os as _os
import warnings as _warnings

# Paddle pins OpenMP to one thread unless OMP_NUM_THREADS is set; use this process's share of
# the cores instead (launchers that start several processes per machine set PADDLE_LOCAL_SIZE).
if "OMP_NUM_THREADS" not in _os.environ:
    _procs = int(_os.environ.get("PADDLE_LOCAL_SIZE", "1") or 1)
    _os.environ["OMP_NUM_THREADS"] = str(max(1, (_os.cpu_count() or 1) // max(1, _procs)))
_warnings.filterwarnings("ignore", message="No ccache found")
from . import data, models  # noqa: F401  (fill the registries)
from .checkpoints import convert_checkpoint, load_pretrained
from .config import load_config
from .export import export_model
from .hosts import register_into
from .inference import Predictor
from .errors import (CheckpointError, ConfigError, DataError, PasslMixerError, RegistryError,
                     ShapeError)
from .models import ARCHS, ImageClassifier, LinearClsHead, MlpMixer
from .registry import (BACKBONES, DATASETS, HEADS, LOSSES, LR_SCHEDULERS, MODELS, NECKS,
                       OPTIMIZERS, TRANSFORMS, Registry, build_backbone, build_head, build_loss,
                       build_model, build_neck, load_plugins)

__version__ = "0.1.0"

__all__ = [
    "ARCHS", "BACKBONES", "DATASETS", "HEADS", "LOSSES", "LR_SCHEDULERS", "MODELS", "NECKS",
    "OPTIMIZERS", "TRANSFORMS", "Registry", "build_backbone", "build_head", "build_loss",
    "build_model", "build_neck", "load_plugins", "load_config", "MlpMixer", "LinearClsHead",
    "ImageClassifier", "PasslMixerError", "ConfigError", "RegistryError", "DataError",
    "ShapeError", "CheckpointError", "convert_checkpoint", "load_pretrained", "export_model", "Predictor",
    "register_into",
]
