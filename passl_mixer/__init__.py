"""passl-mixer: MLP-Mixer for PaddlePaddle, built from YAML through registries."""
import os as _os
import warnings as _warnings

# What the process was started with, read before Paddle's import sets OMP_NUM_THREADS=1 when it
# is unset: the command-line tools then choose the math threads (passl_mixer.cli.set_threads).
# The library itself changes no process-wide setting on import.
_OMP_NUM_THREADS_AT_START = _os.environ.get("OMP_NUM_THREADS")

_INSTALL_PADDLE = """passl-mixer needs PaddlePaddle 2.6 or newer (3.x recommended), which pip does \
not install with it because the CPU and GPU builds are different packages:
  CPU:  python -m pip install paddlepaddle
  GPU:  python -m pip install paddlepaddle-gpu -i \
https://www.paddlepaddle.org.cn/packages/stable/cu126/   (pick the index of your CUDA version)
See the README section "Installing Paddle" and https://www.paddlepaddle.org.cn/en/install/quick"""

with _warnings.catch_warnings():  # Paddle's import warns "No ccache found" (for C++ extensions)
    _warnings.filterwarnings("ignore", message="No ccache found")
    try:
        import paddle as _paddle  # noqa: F401
    except ModuleNotFoundError as _exc:
        if _exc.name != "paddle":
            raise
        raise ImportError(_INSTALL_PADDLE) from None
from . import data, models  # noqa: F401  (fill the registries)
from .checkpoints import convert_checkpoint, load_pretrained
from .catalog import list_configs, list_models, list_variants
from .config import load_config
from .export import export_model
from .hosts import register_into
from .inference import Predictor
from .errors import (CheckpointError, ConfigError, DataError, PasslMixerError, RegistryError,
                     ShapeError)
from .models import ARCHS, ImageClassifier, LinearClsHead, MlpMixer
from .models import GMLP
from .logs import Sink
from .registry import (BACKBONES, DATASETS, HEADS, LOGGERS, LOSSES, LR_SCHEDULERS, MODELS, NECKS,
                       OPTIMIZERS, TRANSFORMS, Registry, build_backbone, build_head, build_loss,
                       build_model, build_neck, load_plugins)

__version__ = "0.1.0"

__all__ = [
    "ARCHS", "BACKBONES", "DATASETS", "HEADS", "LOGGERS", "LOSSES", "LR_SCHEDULERS", "MODELS", "NECKS",
    "OPTIMIZERS", "TRANSFORMS", "Registry", "build_backbone", "build_head", "build_loss",
    "build_model", "build_neck", "load_plugins", "load_config", "MlpMixer", "GMLP", "LinearClsHead",
    "ImageClassifier", "PasslMixerError", "ConfigError", "RegistryError", "DataError",
    "ShapeError", "CheckpointError", "convert_checkpoint", "load_pretrained", "export_model", "Predictor",
    "Sink", "register_into", "list_models", "list_variants", "list_configs",
]
