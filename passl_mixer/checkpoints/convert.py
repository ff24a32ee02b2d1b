"""Convert a checkpoint of any registered family (Mixer, gMLP, ResMLP, FNet) into this
package's files.

    convert_checkpoint("Mixer-B_16.npz", "weights/mixer_b16_in21k")
    convert_checkpoint("gmlp_s16_224.npz", "weights/gmlp_s16")     # a timm state dict
    # -> DIR/model.pdparams   (or model.safetensors)
    #    DIR/model.yaml       its `model:` section builds the matching model

The family is told by its marker key, the architecture inferred from the tensor shapes by
the family's ``dims_from_state_dict`` (named by ``arch`` when it is a variant of the family's
table, else by explicit dimensions), the numerics (GELU form) from the source's layout (see
``reader.py``) and the family's defaults (norm epsilons). The output directory is written
atomically: on any error nothing is left behind, and an existing directory is replaced only
once the new one is complete.
"""
from __future__ import annotations

import copy
import inspect
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import yaml

from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_dir, require_dir, write_text
from ..registry import build_model
from .reader import (Checkpoint, family_name, fit_singleton_dims, infer_dims, read_checkpoint,
                     token_grid)
from .weights import list_some, save_weights

logger = logging.getLogger("passl_mixer")

FORMATS = ("pdparams", "safetensors")
OUTPUT_FILES = ("model.pdparams", "model.safetensors", "model.yaml")


def model_config(ckpt: Checkpoint, img_size: Union[None, int, Sequence[int]] = None,
                 gelu: Optional[str] = None) -> Dict[str, Any]:
    """The ``model:`` config (ImageClassifier + the checkpoint's backbone family +
    LinearClsHead) matching ``ckpt``.

    The backbone is named by its ``arch`` when the dimensions are a variant of the family's
    table, else by all its ``DIM_KEYS``. ``img_size`` is the resolution the checkpoint was
    trained at, needed only when its patch grid is not square; ``gelu`` overrides the GELU
    form implied by the source's layout.
    """
    family = ckpt.family
    dims = infer_dims(ckpt.weights, ckpt.path, family)
    options = inspect.signature(family.__init__).parameters
    arch = family.arch_of(dims)
    backbone: Dict[str, Any] = {"name": family_name(family)}
    backbone.update({"arch": arch} if arch else {k: dims[k] for k in family.DIM_KEYS})
    # further dimensions the weights tell (FNet's optional mlp_dim), unless the arch sets them
    backbone.update({k: v for k, v in dims.items() if k in options and k not in backbone
                     and k not in ("in_channels", "img_size")
                     and not (arch and k in family.ARCHS[arch])})
    if dims.get("num_tokens") is not None:
        rows, cols = token_grid(dims["num_tokens"], dims["patch_size"], img_size)
        height, width = rows * dims["patch_size"], cols * dims["patch_size"]
        backbone["img_size"] = height if height == width else [height, width]
    elif img_size is not None:  # a family with no token-indexed weights runs on any grid
        backbone["img_size"] = img_size
    if dims["in_channels"] != 3:
        backbone["in_channels"] = dims["in_channels"]
    if "gelu" in options:
        backbone["gelu"] = gelu or ckpt.gelu
    elif gelu is not None:
        raise ConfigError(f"{family_name(family)} has no gelu option; leave gelu unset.")
    # the numerics the source computes are the family's defaults (its reference code's):
    # written out, so that model.yaml says what the weights were trained with
    backbone.update({name: p.default for name, p in options.items()
                     if name.endswith("norm_eps") and p.default is not inspect.Parameter.empty})
    return {"name": "ImageClassifier", "backbone": backbone,
            "head": {"name": "LinearClsHead", "num_classes": dims["num_classes"],
                     "in_channels": dims["hidden_dim"]}}


def check_fits(cfg: Dict[str, Any], weights: Dict[str, np.ndarray], source: str,
               shapes: Optional[Dict[str, List[int]]] = None) -> None:
    """Raise a CheckpointError unless ``weights`` are exactly the parameters of the model
    ``cfg`` builds (same names, same shapes; ``shapes``: those parameters', if known)."""
    expected = shapes or expected_shapes(cfg, infer_dims(weights, source)["num_blocks"])
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    wrong = [f"{k}: model {expected[k]} vs checkpoint {list(np.shape(weights[k]))}"
             for k in expected if k in weights and expected[k] != list(np.shape(weights[k]))]
    if missing or unexpected or wrong:
        parts = [f"{what} {list_some(keys)}" for what, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected),
                  ("shape mismatches", wrong)) if keys]
        raise CheckpointError(f"{source} is not a consistent {cfg['backbone']['name']} "
                              f"checkpoint: {'; '.join(parts)}.")


def expected_shapes(cfg: Dict[str, Any], num_blocks: int) -> Dict[str, List[int]]:
    """Parameter shapes of the model ``cfg`` builds with ``num_blocks`` blocks.

    Taken from a one-block copy of the model: all blocks have the same shapes, and building
    them all would cost as much memory as the checkpoint itself.
    """
    one_block = copy.deepcopy(cfg)
    one_block["backbone"]["num_blocks"] = 1  # overrides an arch's
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
    cfg = model_config(ckpt, img_size, gelu)
    shapes = expected_shapes(cfg, infer_dims(ckpt.weights, f"'{src}'", ckpt.family)["num_blocks"])
    ckpt.notes += fit_singleton_dims(ckpt.weights, shapes)
    for note in ckpt.notes:
        logger.info("convert: %s", note)
    if ckpt.ignored:
        logger.info("convert: took the backbone of a %s; ignored %d other keys %s",
                    ckpt.layout.description, len(ckpt.ignored), list_some(ckpt.ignored))
    check_fits(cfg, ckpt.weights, f"'{src}'", shapes)
    weights_name = f"model.{format}"
    with atomic_dir(output) as tmp:
        save_weights(ckpt.weights, os.path.join(tmp, weights_name))
        write_text(os.path.join(tmp, "model.yaml"), _config_text(cfg, ckpt))
    num_params = int(sum(np.size(v) for v in ckpt.weights.values()))
    logger.info("convert: %s (%s, %s, %s parameters) -> %s", src, ckpt.layout.description,
                ckpt.family_name, f"{num_params:,}", output)
    return {"output": output, "weights": os.path.join(output, weights_name),
            "config": os.path.join(output, "model.yaml"), "model": cfg,
            "layout": ckpt.layout.name, "family": ckpt.family_name, "num_params": num_params,
            "notes": ckpt.notes, "ignored": len(ckpt.ignored)}


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
    numerics = [f"{k} {v}" for k, v in cfg["backbone"].items()
                if k == "gelu" or k.endswith("norm_eps")]
    header = (
        f"# Converted from {os.path.abspath(ckpt.path)}\n"
        f"# ({ckpt.layout.description}, {ckpt.family_name})."
        f"{' Numerics of the source: ' + ', '.join(numerics) + '.' if numerics else ''}\n"
        f"# passl_mixer.build_model(load_config(this file)['model']) builds the matching model;\n"
        f"# the weights beside this file load into it exactly (weights: PATH), or with head and\n"
        f"# resolution changes through model.pretrained: {{path: PATH}} (load_pretrained).\n")
    return header + yaml.safe_dump({"model": cfg}, sort_keys=False, default_flow_style=None)
