"""Convert a Mixer checkpoint into this package's files.

    convert_checkpoint("Mixer-B_16.npz", "weights/mixer_b16_in21k")
    # -> weights/mixer_b16_in21k/model.pdparams   (or model.safetensors)
    #    weights/mixer_b16_in21k/model.yaml       its `model:` section builds the matching model

The architecture is inferred from the tensor shapes, the numerics (GELU form, LayerNorm
epsilon) from the source's layout (see ``reader.py``). The output directory is written
atomically: on any error nothing is left behind, and an existing directory is replaced only
once the new one is complete.
"""
from __future__ import annotations

import copy
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import yaml

from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_dir, require_dir, write_text
from ..models.backbones.mlp_mixer import ARCHS, DIM_KEYS
from ..registry import build_model
from .reader import Checkpoint, infer_dims, read_checkpoint, token_grid
from .weights import list_some, save_weights

logger = logging.getLogger("passl_mixer")

FORMATS = ("pdparams", "safetensors")
OUTPUT_FILES = ("model.pdparams", "model.safetensors", "model.yaml")
NORM_EPS = 1e-6  # the original Flax code, timm and PASSL v1 all use it


def model_config(ckpt: Checkpoint, img_size: Union[None, int, Sequence[int]] = None,
                 gelu: Optional[str] = None) -> Dict[str, Any]:
    """The ``model:`` config (ImageClassifier + MlpMixer + LinearClsHead) matching ``ckpt``.

    ``img_size`` is the resolution the checkpoint was trained at, needed only when its patch
    grid is not square; ``gelu`` overrides the GELU form implied by the source's layout.
    """
    dims = infer_dims(ckpt.weights, ckpt.path)
    rows, cols = token_grid(dims["num_tokens"], dims["patch_size"], img_size)
    height, width = rows * dims["patch_size"], cols * dims["patch_size"]
    arch = next((name for name, a in ARCHS.items() if all(a[k] == dims[k] for k in DIM_KEYS)),
                None)
    backbone: Dict[str, Any] = {"name": "MlpMixer"}
    backbone.update({"arch": arch} if arch else {k: dims[k] for k in DIM_KEYS})
    backbone["img_size"] = height if height == width else [height, width]
    if dims["in_channels"] != 3:
        backbone["in_channels"] = dims["in_channels"]
    backbone.update(gelu=gelu or ckpt.layout.gelu, norm_eps=NORM_EPS)
    return {"name": "ImageClassifier", "backbone": backbone,
            "head": {"name": "LinearClsHead", "num_classes": dims["num_classes"],
                     "in_channels": dims["hidden_dim"]}}


def check_fits(cfg: Dict[str, Any], weights: Dict[str, np.ndarray], source: str) -> None:
    """Raise a CheckpointError unless ``weights`` are exactly the parameters of the model
    ``cfg`` builds (same names, same shapes)."""
    expected = expected_shapes(cfg, infer_dims(weights, source)["num_blocks"])
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    wrong = [f"{k}: model {expected[k]} vs checkpoint {list(np.shape(weights[k]))}"
             for k in expected if k in weights and expected[k] != list(np.shape(weights[k]))]
    if missing or unexpected or wrong:
        parts = [f"{what} {list_some(keys)}" for what, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected),
                  ("shape mismatches", wrong)) if keys]
        raise CheckpointError(f"{source} is not a consistent Mixer checkpoint: "
                              f"{'; '.join(parts)}.")


def expected_shapes(cfg: Dict[str, Any], num_blocks: int) -> Dict[str, List[int]]:
    """Parameter shapes of the model ``cfg`` builds with ``num_blocks`` blocks.

    Taken from a one-block copy of the model: all blocks have the same shapes, and building
    them all would cost as much memory as the checkpoint itself.
    """
    one_block = copy.deepcopy(cfg)
    one_block["backbone"]["num_blocks"] = 1
    shapes = {}
    for name, param in build_model(one_block).state_dict().items():
        if name.startswith("backbone.blocks.0."):
            rest = name[len("backbone.blocks.0."):]
            shapes.update({f"backbone.blocks.{i}.{rest}": list(param.shape)
                           for i in range(num_blocks)})
        else:
            shapes[name] = list(param.shape)
    return shapes


def convert_checkpoint(src: str, output: str, format: str = "pdparams",
                       img_size: Union[None, int, Sequence[int]] = None,
                       gelu: Optional[str] = None) -> Dict[str, Any]:
    """Convert ``src`` (an official ``.npz`` or a PASSL/timm/passl_mixer state dict) into
    ``output/model.<format>`` and ``output/model.yaml``; return a summary dict.

    ``img_size``: the resolution the checkpoint was trained at (needed only for a non-square
    patch grid). ``gelu``: 'tanh' or 'exact' to override the source layout's GELU form.
    """
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {format!r}.")
    if gelu not in (None, "tanh", "exact"):
        raise ConfigError(f"gelu must be 'tanh' or 'exact', got {gelu!r}.")
    _check_output_dir(output)
    ckpt = read_checkpoint(src)
    for note in ckpt.notes:
        logger.info("convert: %s", note)
    if ckpt.ignored:
        logger.info("convert: took the backbone of a %s; ignored %d other keys %s",
                    ckpt.layout.description, len(ckpt.ignored), list_some(ckpt.ignored))
    cfg = model_config(ckpt, img_size, gelu)
    check_fits(cfg, ckpt.weights, f"'{src}'")
    weights_name = f"model.{format}"
    with atomic_dir(output) as tmp:
        save_weights(ckpt.weights, os.path.join(tmp, weights_name))
        write_text(os.path.join(tmp, "model.yaml"), _config_text(cfg, ckpt))
    num_params = int(sum(np.size(v) for v in ckpt.weights.values()))
    logger.info("convert: %s (%s, %s parameters) -> %s", src, ckpt.layout.description,
                f"{num_params:,}", output)
    return {"output": output, "weights": os.path.join(output, weights_name),
            "config": os.path.join(output, "model.yaml"), "model": cfg,
            "layout": ckpt.layout.name, "num_params": num_params, "notes": ckpt.notes,
            "ignored": len(ckpt.ignored)}


def _check_output_dir(output: str) -> None:
    """The converter replaces ``output`` as a whole, so refuse a directory holding other files."""
    if not require_dir(output, "Output", CheckpointError,
                       "a directory to write model.pdparams and model.yaml into (a new one, or a "
                       "previous conversion's)", must_exist=False):
        return
    others = sorted(set(os.listdir(output)) - set(OUTPUT_FILES))
    if others:
        raise CheckpointError(f"Output directory '{output}' holds files other than a previous "
                              f"conversion's ({list_some(others)}); the converter replaces the whole "
                              f"directory, so choose a new or empty one.")


def _config_text(cfg: Dict[str, Any], ckpt: Checkpoint) -> str:
    header = (
        f"# Converted from {os.path.abspath(ckpt.path)}\n"
        f"# ({ckpt.layout.description}). Numerics of the source: GELU "
        f"{cfg['backbone']['gelu']}, LayerNorm epsilon {NORM_EPS}.\n"
        f"# passl_mixer.build_model(load_config(this file)['model']) builds the matching model;\n"
        f"# the weights beside this file load into it exactly (weights: PATH), or with head and\n"
        f"# resolution changes through model.pretrained: {{path: PATH}} (load_pretrained).\n")
    return header + yaml.safe_dump({"model": cfg}, sort_keys=False, default_flow_style=None)
