"""Published weights of every family (Mixer, gMLP, ResMLP, FNet): convert them, load them,
change their resolution.

Nothing here knows a family's parameter names: each family declares its key layout, its
dimensions from a state dict, its token-indexed parameters and its official/timm name map
next to the model (``STATE_DICT``, ``dims_from_state_dict``, ``arch_of`` in
``models/backbones/``), and the code here uses those.

* :func:`convert_checkpoint` — an official Flax Mixer ``.npz`` or a PASSL v1 / timm /
  passl_mixer state dict (timm's gMLP and ResMLP, the official ResMLP code's too) ->
  ``DIR/model.pdparams`` (or ``.safetensors``) + ``DIR/model.yaml``.
* :func:`load_pretrained` — load any of those (or a converted file, a training checkpoint, a
  MoCo v3 / BYOL checkpoint's backbone) into a model, re-initialising a head that does not fit
  and resizing the token-indexed weights for another resolution; ``model.pretrained`` in a
  config.
* :func:`load_weights` / :func:`save_weights` / :func:`set_weights` — this package's own weight
  files (``.pdparams``, ``.safetensors``, the model in a ``.pdckpt``), read and loaded exactly:
  all weight I/O of the package is in :mod:`passl_mixer.checkpoints.weights`.
* :func:`resize_token_params` and friends — the MLP-Mixer paper's block-diagonal resolution
  change (Appendix C) and an interpolation for other ratios, per token-indexed parameter.
"""
from .convert import convert_checkpoint, model_config
from .pretrained import load_initial_weights, load_pretrained
from .reader import Checkpoint, detect_family, families, read_checkpoint
from .resolution import (blockdiag_param, blockdiag_token_mixing, interpolate_param,
                         interpolate_token_mixing, resize_token_mixing, resize_token_params,
                         subsequences)
from .weights import load_weights, save_weights, set_weights

__all__ = ["convert_checkpoint", "model_config", "load_pretrained", "load_initial_weights",
           "Checkpoint", "read_checkpoint", "detect_family", "families", "resize_token_mixing",
           "resize_token_params",
           "blockdiag_param", "interpolate_param", "blockdiag_token_mixing",
           "interpolate_token_mixing", "subsequences", "load_weights", "save_weights",
           "set_weights"]
