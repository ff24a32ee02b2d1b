"""Training engine: the Trainer loop, evaluation, checkpoints, logging, distributed helpers."""
from .checkpoint import (find_resume_checkpoint, load_checkpoint, load_weights, save_checkpoint,
                         save_weights, set_weights)
from .evaluate import evaluate
from .trainer import Trainer, TrainingDiverged

__all__ = ["Trainer", "TrainingDiverged", "evaluate", "find_resume_checkpoint", "load_checkpoint",
           "load_weights", "save_checkpoint", "save_weights", "set_weights"]
