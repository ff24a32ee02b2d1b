"""Published MLP-Mixer weights: convert them, load them, change their resolution.

* :func:`convert_checkpoint` — an official Flax ``.npz`` or a PASSL v1 / timm / passl_mixer
  state dict -> ``DIR/model.pdparams`` (or ``.safetensors``) + ``DIR/model.yaml``.
* :func:`load_pretrained` — load any of those (or a converted file, a training checkpoint, a
  MoCo v3 / BYOL checkpoint's backbone) into a model, re-initialising a head that does not fit
  and resizing the token-mixing MLPs for another resolution; ``model.pretrained`` in a config.
* :func:`load_weights` / :func:`save_weights` / :func:`set_weights` — this package's own weight
  files (``.pdparams``, ``.safetensors``, the model in a ``.pdckpt``), read and loaded exactly:
  all weight I/O of the package is in :mod:`passl_mixer.checkpoints.weights`.
* :func:`resize_token_mixing` and friends — the paper's block-diagonal resolution change
  (Appendix C) and an interpolation for other ratios.
"""
from .convert import convert_checkpoint, model_config
from .pretrained import load_initial_weights, load_pretrained
from .reader import Checkpoint, read_checkpoint
from .resolution import (blockdiag_token_mixing, interpolate_token_mixing, resize_token_mixing,
                         subsequences)
from .weights import load_weights, save_weights, set_weights

__all__ = ["convert_checkpoint", "model_config", "load_pretrained", "load_initial_weights", "Checkpoint",
           "read_checkpoint", "resize_token_mixing", "blockdiag_token_mixing",
           "interpolate_token_mixing", "subsequences", "load_weights", "save_weights",
           "set_weights"]
