"""Training engine: the Trainer loop, evaluation, training checkpoints, distributed helpers.

Model weight files are :mod:`passl_mixer.checkpoints`, the logger :mod:`passl_mixer.logs`.
"""
from .checkpoint import find_resume_checkpoint, load_checkpoint, save_checkpoint
from .evaluate import evaluate
from .trainer import Trainer, TrainingDiverged

__all__ = ["Trainer", "TrainingDiverged", "evaluate", "find_resume_checkpoint", "load_checkpoint",
           "save_checkpoint"]
