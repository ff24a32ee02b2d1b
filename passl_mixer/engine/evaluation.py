"""Evaluate weights on a config's validation set, without anything of training.

``tools/eval.py`` and ``tools/train.py --eval-only`` run :func:`evaluate_config`. It needs only
``model``, ``data.val`` and weights (``weights: PATH``, ``model.pretrained`` or a training
checkpoint to resume): no training data, no optimizer. It writes its results (``eval.json``
and ``eval.log``) into a folder of its own, by default ``<train.output_dir>/eval/<weights file
stem>/``, and never into the run's ``vdl/`` or ``train.log``. Run under
``python -m paddle.distributed.launch`` the processes share the work and the numbers are the
same as in one process.
"""
from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict, Optional

import paddle

from .. import data as data_lib
from ..checkpoints import load_initial_weights
from ..errors import ConfigError
from ..fileio import make_dir, write_text
from ..logs import setup_logging
from ..registry import build_model
from ..schema import tracking, validate_section
from . import checkpoint as ckpt
from . import distributed as dist
from .amp import check_amp_support, o2_decorate_kwargs
from .evaluate import evaluate
from .inputs import check_inputs


def require_weights(cfg: Dict, resume_path: Optional[str], resume: Optional[str]) -> None:
    """Evaluating without any weights would report the accuracy of a random initialisation."""
    if resume_path or cfg.get("weights") or (cfg.get("model") or {}).get("pretrained"):
        return
    found = (" (--resume auto found no readable checkpoint in train.output_dir)"
             if resume == "auto" else "")
    raise ConfigError(f"Nothing to evaluate: no weights were given{found}, so the model would "
                      f"keep its random initialisation. Add --weights PATH or -o weights=PATH (a "
                      f".pdckpt checkpoint, .pdparams or .safetensors file), --resume PATH, or "
                      f"model.pretrained.")


def validate_eval_config(cfg: Dict) -> Dict[str, Dict[str, Any]]:
    """Check the sections evaluation reads (``data.train`` and ``optimizer`` may be absent);
    returns {section: its values with defaults filled in}."""
    from .trainer import AmpSection, DataSection, RunSection, TrainSection  # the same schemas

    if not isinstance(cfg, dict):
        raise ConfigError(f"A config must be a mapping of sections, got {type(cfg).__name__}.")
    # evaluation needs neither an optimizer nor training data: placeholders for the check
    validate_section(RunSection, {**cfg, "optimizer": cfg.get("optimizer") or {},
                                  "data": cfg.get("data") or {}}, "")
    data = cfg.get("data") or {}
    sections = {"data": validate_section(DataSection, {**data, "train": data.get("train") or {}},
                                         "data")}
    if not data.get("val"):
        raise ConfigError("Evaluation needs a 'data.val' section (the validation loader: "
                          "dataset, transforms, batch_size); this config has none.")
    for key, schema in (("train", TrainSection), ("amp", AmpSection)):
        sections[key] = validate_section(schema, cfg.get(key), key)
    return sections


def default_output_dir(cfg: Dict, config_name: str, weights: str) -> str:
    """``<train.output_dir or output/<config name>>/eval/<weights file stem>``."""
    run_dir = (cfg.get("train") or {}).get("output_dir") or os.path.join("output", config_name)
    stem = os.path.splitext(os.path.basename(os.path.normpath(weights)))[0] or "weights"
    return os.path.join(run_dir, "eval", stem)


def eval_amp(model: paddle.nn.Layer, amp_cfg: Dict[str, Any], logger):
    """The model and the ``auto_cast`` settings evaluation runs under: those the Trainer uses
    for the same config (O2 casts the weights to half precision, as in training)."""
    enable, dtype, level = bool(amp_cfg["enable"]), amp_cfg["dtype"], amp_cfg["level"]
    if enable and not paddle.device.is_compiled_with_cuda():
        logger.warning("amp.enable is set but this Paddle build has no GPU: Paddle ignores AMP "
                       "on CPU, so evaluation runs in float32.")
        enable = False
    if enable:
        check_amp_support(dtype)
        if level == "O2":
            kwargs = o2_decorate_kwargs(model, dtype)
            kwargs.pop("master_grad", None)  # a training option: no optimizer here
            model = paddle.amp.decorate(models=model, **kwargs)
    return model, {"enable": enable, "dtype": dtype, "level": level}


def evaluate_config(cfg: Dict, weights: Optional[str] = None, output_dir: Optional[str] = None,
                    config_name: str = "run", resume: Optional[str] = None) -> Dict[str, Any]:
    """Top-1, top-5 and loss of weights on ``cfg``'s ``data.val``; returns the metrics (and
    ``output_dir``: where ``eval.json`` and ``eval.log`` were written).

    ``weights``: a .pdckpt, .pdparams or .safetensors file (replaces the config's ``weights``);
    without it, ``weights`` or ``model.pretrained`` of the config. ``resume``: 'auto' (the
    newest complete checkpoint in ``train.output_dir``) or a checkpoint path, whose model
    weights are evaluated (``--eval-only --resume``). ``output_dir``: where the results go
    (default :func:`default_output_dir`), created only once the data, model and weights have
    been read."""
    cfg = copy.deepcopy(cfg)
    sections = validate_eval_config(cfg)
    if weights:
        cfg["weights"] = weights
    dist.init()
    rank, world_size = dist.rank(), dist.world_size()
    resume_path = resume
    if resume == "auto":
        run_dir = sections["train"]["output_dir"] or os.path.join("output", config_name)
        resume_path = ckpt.find_resume_checkpoint(run_dir)
    require_weights(cfg, resume_path, resume)
    # a --resume PATH is named as such; it replaces the config's weights, unread
    check_inputs(dict(cfg, weights=None) if resume_path else cfg, splits=("val",), resume=resume)
    if resume_path:
        cfg["weights"] = resume_path  # a checkpoint's model weights, loaded exactly
    source = cfg.get("weights") or (cfg["model"].get("pretrained") if not isinstance(
        cfg["model"].get("pretrained"), dict) else cfg["model"]["pretrained"].get("path"))
    output_dir = output_dir or default_output_dir(cfg, config_name, str(source))
    logger = setup_logging()  # the console; the log file once everything has been built

    from .trainer import check_class_count
    with tracking(cfg):  # config errors below name the key's full path
        val_loader = data_lib.build_dataloader(cfg["data"]["val"], train=False,
                                               seed=sections["train"]["seed"],
                                               world_size=world_size, rank=rank)
        paddle.seed(sections["train"]["seed"])
        model = build_model(cfg["model"])
        check_class_count(model, val_loader, "data.val")
        load_initial_weights(model, cfg)
        model, amp = eval_amp(model, sections["amp"], logger)
    # nothing is created before the data, the model and the weights are found to be usable
    if dist.is_main():
        make_dir(output_dir, "evaluation output directory")
    logger = setup_logging(output_dir, filename="eval.log")
    logger.info(f"evaluating {source} on {val_loader.num_samples} images of data.val "
                f"({world_size} process(es))")
    metrics = evaluate(model, val_loader, amp=amp)
    path = os.path.join(output_dir, "eval.json")
    if dist.is_main():
        write_text(path, json.dumps(metrics, indent=1))
    logger.info(f"eval of {source}: top1 {metrics['top1']:.2f} top5 {metrics['top5']:.2f} "
                f"loss {metrics['loss']:.4f} ({metrics['num_samples']} images)")
    logger.info(f"results: {os.path.abspath(path)} (log: "
                f"{os.path.abspath(os.path.join(output_dir, 'eval.log'))})")
    return {**metrics, "output_dir": output_dir}
