"""Load published or converted weights of any family into a model built from a config.

    load_pretrained(model, "Mixer-B_16.npz")                     # official file, directly
    load_pretrained(model, "weights/b16/model.pdparams")        # converted
    load_pretrained(model, "gmlp_s16_224.safetensors")          # a timm state dict
    load_pretrained(model, "mocov3/latest.pdckpt")              # SSL: its backbone only

The checkpoint's family (told by its keys, see ``reader.py``) must be the model backbone's.

or, in a config, ``model.pretrained`` (honoured by tools/train.py)::

    model:
      pretrained: weights/b16/model.pdparams        # or a mapping:
      # pretrained: {path: ..., img_size: 224, resize: auto, strict_head: false}

Unlike ``weights: PATH`` (an exact reload), this adapts the checkpoint to the model:

* Head — a head with another class count (or a checkpoint without one) is dropped and the
  model's head re-initialised to zero, as the paper does for fine-tuning; the log says so.
  ``strict_head=True`` makes that an error instead.
* Neck — a checkpoint without any ``neck.*`` key (a published or SSL backbone) leaves the
  model's neck as built, e.g. the BatchNorm of a linear probe; the log says so.
* Resolution — the model is built at its fine-tuning resolution (``backbone.img_size``);
  when that gives another token count than the checkpoint's, the family's token-indexed
  weights (the Mixer's token-mixing MLPs, gMLP's gate and ResMLP's token maps, FNet's position
  embedding) are resized (see ``resolution.py``): ``resize='blockdiag'`` is the MLP-Mixer
  paper's exact method, for integer side ratios (for the Mixer it needs
  ``backbone.tokens_mlp_dim`` = K²·(the checkpoint's)); ``'interpolate'`` resamples over the
  patch grid (an approximation; a warning says so); ``'auto'`` picks the block-diagonal method
  whenever it is exact for the family and the model's shapes allow it.
* Anything else must match: missing or unexpected parameters are reported by name, shape
  mismatches with both shapes.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from ..errors import CheckpointError, ConfigError
from ..models.backbones.base import IsotropicBackbone
from ..models.heads.linear_cls_head import LinearClsHead
from .reader import (BACKBONE, HEAD, Checkpoint, fit_singleton_dims, infer_dims,
                     read_checkpoint, token_grid)
from .resolution import choose_method, integer_ratio, resize_token_params, token_params
from .weights import list_some, load_weights, set_weights

logger = logging.getLogger("passl_mixer")


def load_pretrained(model, path: str, img_size: Union[None, int, Sequence[int]] = None,
                    resize: str = "auto", strict_head: bool = False) -> Dict[str, Any]:
    """Load the checkpoint ``path`` into ``model`` (an ImageClassifier, or a bare backbone, of
    any family: MlpMixer, GMLP, ResMLP, FNet, ...), adapting head and resolution; return a
    summary dict.

    Args:
        model: the model, built at the resolution and class count to fine-tune with; its
            backbone must be of the checkpoint's family.
        path: an official Mixer ``.npz``, a converted ``.pdparams``/``.safetensors``, a
            training checkpoint ``.pdckpt``, or a timm / PASSL v1 / MoCo v3 / BYOL state dict.
        img_size: the resolution the *checkpoint* was trained at (int or [height, width]).
            Needed only when its patch grid is not square; when given it is checked against
            the checkpoint. The target resolution is the model's own.
        resize: 'auto', 'blockdiag' or 'interpolate' (used only when the token counts differ).
        strict_head: raise instead of re-initialising a head that does not fit.
    """
    backbone = getattr(model, "backbone", model)
    if not isinstance(backbone, IsotropicBackbone):
        raise ConfigError(f"load_pretrained needs a backbone of a registered family (MlpMixer, "
                          f"GMLP, ResMLP, FNet, ...) or a model with one as its 'backbone', got "
                          f"{type(model).__name__}"
                          f"{'' if backbone is model else ' with a ' + type(backbone).__name__}.")
    ckpt = read_checkpoint(path)
    source = f"pretrained weights '{path}'"
    if not isinstance(backbone, ckpt.family):
        raise CheckpointError(f"Cannot load '{path}': the checkpoint is a {ckpt.family_name}, "
                              f"the model's backbone a {type(backbone).__name__}. Build the "
                              f"model with backbone.name: {ckpt.family_name} (tools/"
                              f"convert_checkpoint.py writes the matching model.yaml).")
    logger.info("pretrained: reading %s (%s, %s)", path, ckpt.layout.description,
                ckpt.family_name)
    for note in ckpt.notes:
        logger.info("pretrained: %s", note)
    if ckpt.ignored:
        logger.info("pretrained: took the backbone only; ignored %d other keys %s",
                    len(ckpt.ignored), list_some(ckpt.ignored))

    weights, resized = _fit_resolution(ckpt, backbone, img_size, resize, path)
    if backbone is model:
        if ckpt.has_head:
            logger.info("pretrained: the model has no classification head; the checkpoint's "
                        "is not used")
        weights = {(k[len(BACKBONE):] if k.startswith(BACKBONE) else k): v
                   for k, v in weights.items() if not k.startswith("head.")}
        head = "none"
    else:
        weights, head = _fit_head(model, weights, strict_head, path)
        weights = _fit_neck(model, weights)
    for note in fit_singleton_dims(weights, {k: v.shape for k, v in model.state_dict().items()}):
        logger.info("pretrained: %s", note)
    set_weights(model, weights, source=source)
    logger.info("pretrained: loaded %s into %s", path, type(model).__name__)
    return {"path": path, "layout": ckpt.layout.name, "family": ckpt.family_name,
            "resize": resized, "head": head, "ignored": len(ckpt.ignored)}


def _fit_resolution(ckpt: Checkpoint, backbone: IsotropicBackbone, img_size, resize: str,
                    path: str):
    """Resize the family's token-indexed weights when the checkpoint's token count is not the
    model's."""
    family, weights = ckpt.family, ckpt.weights
    dims = infer_dims(weights, f"'{path}'", family)
    if dims.get("num_tokens") is None:  # nothing in the weights depends on the grid
        return weights, None
    src = token_grid(dims["num_tokens"], dims["patch_size"], img_size)
    dst = tuple(backbone.grid_size)
    if dims["num_tokens"] == backbone.num_tokens:
        return weights, None
    layout = family.STATE_DICT
    params = {k: (np.shape(weights[k]), axes)
              for k, axes in token_params(weights, layout, BACKBONE).items()}
    model_shapes = {BACKBONE + k: list(v.shape) for k, v in backbone.state_dict().items()}
    width_key = _width_key(params, model_shapes, family, dims, backbone)
    method = choose_method(resize, src, dst, params, model_shapes, layout.blockdiag_exact,
                           ckpt.family_name, width_key)
    change = f"{src[0]}x{src[1]} -> {dst[0]}x{dst[1]} patches"
    what = family.TOKEN_MIXER or f"token-indexed weights ({_names(params)})"
    if method == "blockdiag":
        logger.info("pretrained: %s resized %s by the paper's block-diagonal initialisation "
                    "(exact on each of the %d image parts)", what, change,
                    (dst[0] // src[0]) * (dst[1] // src[1]))
    else:
        ratio = integer_ratio(src, dst)
        hidden = next(((k, axes.index("hidden")) for k, (_, axes) in params.items()
                       if "hidden" in axes), None)
        exact = (f"; the paper's exact block-diagonal method needs model.backbone.{width_key}: "
                 f"{ratio[0] * ratio[1] * params[hidden[0]][0][hidden[1]]}"
                 if ratio and width_key and hidden and layout.blockdiag_exact else "")
        logger.warning("pretrained: %s resized %s by interpolation over the patch grid: an "
                       "approximation of the pretrained weights, which fine-tuning has to "
                       "correct%s", what, change, exact)
    return resize_token_params(weights, layout, src, dst, method, BACKBONE), method


def _width_key(params, model_shapes, family, dims, backbone) -> Optional[str]:
    """The config key of the token-indexed weights' hidden width (the Mixer's tokens_mlp_dim):
    the dimension equal to that width both in the checkpoint and in the model; None if the
    parameters have no hidden axis (or no dimension is it)."""
    for key, (shape, axes) in params.items():
        if "hidden" in axes and key in model_shapes:
            axis = axes.index("hidden")
            return next((k for k in family.DIM_KEYS if dims.get(k) == shape[axis]
                         and getattr(backbone, k, None) == model_shapes[key][axis]), None)
    return None


def _names(params) -> str:
    """The token-indexed parameters' names with the block index as '*', for the log."""
    names = dict.fromkeys(re.sub(r"blocks\.\d+\.", "blocks.*.", k[len(BACKBONE):])
                          for k in params)
    return ", ".join(names)


def _fit_head(model, weights, strict_head: bool, path: str):
    """Keep the checkpoint's head if it fits the model's, else drop it and zero the model's."""
    own = {k: list(v.shape) for k, v in model.state_dict().items() if k.startswith("head.")}
    theirs = {k: list(np.shape(v)) for k, v in weights.items() if k.startswith("head.")}
    rest = {k: v for k, v in weights.items() if not k.startswith("head.")}
    if not own:
        if theirs:
            logger.info("pretrained: the model's head has no parameters; the checkpoint's head "
                        "is not used")
        return rest, "none"
    if theirs == own:
        return weights, "loaded"
    classes = theirs.get(f"{HEAD}weight", [None, None])[1]
    why = ("the checkpoint has no classification head" if classes is None else
           f"the checkpoint's head has {classes} classes, the model's "
           f"{own.get(f'{HEAD}weight', [None, '?'])[1]}")
    if strict_head:
        raise CheckpointError(f"Cannot load the head of '{path}': {why}, and strict_head is "
                              f"set.")
    if hasattr(model.head, "init_weights"):
        model.head.init_weights()
    logger.info("pretrained: %s: %smodel head re-initialised%s", why,
                "checkpoint head dropped, " if classes is not None else "",
                " to zero" if isinstance(model.head, LinearClsHead) else "")
    rest.update({k: v.numpy() for k, v in model.state_dict().items() if k.startswith("head.")})
    return rest, "reinitialised"


def _fit_neck(model, weights):
    """Keep the model's own neck when the checkpoint has none; a partial one is reported."""
    own = {k: v for k, v in model.state_dict().items() if k.startswith("neck.")}
    if not own or any(k.startswith("neck.") for k in weights):
        return weights
    logger.info("pretrained: the checkpoint has no neck: the model's %s keeps its "
                "initialisation", type(model.neck).__name__)
    return {**weights, **{k: v.numpy() for k, v in own.items()}}


def load_initial_weights(model, cfg) -> Optional[str]:
    """Start ``model`` from what the config names, and return a description (None: nothing).

    ``weights: PATH`` (top level) reloads this package's own weights exactly (a training
    checkpoint, .pdparams or .safetensors; every key must fit); otherwise ``model.pretrained``
    (a path or a mapping of :func:`load_pretrained` options) adapts published or converted
    weights to the model. ``weights`` wins when both are set.
    """
    from ..schema import check_call

    if cfg.get("weights"):
        path = cfg["weights"]
        set_weights(model, load_weights(path), source=f"weights '{path}'")
        logger.info("loaded weights from %s", path)
        return f"weights {path}"
    pretrained = (cfg.get("model") or {}).get("pretrained")
    if not pretrained:
        return None
    options = pretrained if isinstance(pretrained, dict) else {"path": pretrained}
    options = check_call(load_pretrained, options, "model.pretrained", injected=("model",))
    load_pretrained(model, **options)
    return f"pretrained {options.get('path')}"
