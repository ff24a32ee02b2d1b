"""Evaluate weights on a config's validation set, without anything of training.

``tools/eval.py`` and ``tools/train.py --eval-only`` run :func:`evaluate_config`. It needs only
``model``, ``data.val`` and weights (``weights: PATH``, ``model.pretrained`` or a training
checkpoint to resume): no training data, no optimizer. It writes its results (``eval.json``
and ``eval.log``) into a folder of its own, by default ``<train.output_dir>/eval/<weights file
stem>/``, and never into the run's ``vdl/`` or ``train.log``. Run under
``python -m paddle.distributed.launch`` the processes share the work and the numbers are the
same as in one process.

On a CPU the weights are evaluated through a Paddle Inference program (``engine='inference'``,
the default there): the model is traced once into a temporary folder and run by oneDNN, which
reaches ~90 % of the CPU's GEMM peak where dygraph reaches 14 % on an AMD EPYC (its matmuls
are MKL's; ``tools/benchmark.py --mode infer``), with the same numbers (float32, tested equal to
dygraph). Training's own evaluations stay in dygraph: a oneDNN predictor in the training
process would leave dygraph there ~1.8x slower for the rest of the run.
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
from typing import Any, Dict, Optional, Sequence

import paddle

from .. import data as data_lib
from ..checkpoints import load_initial_weights
from ..errors import ConfigError
from ..export_layout import PREFIX, program_file
from ..fileio import make_dir, write_text
from ..inference import InferenceModel, available_cores, paddle_config, save_program
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


ENGINES = ("auto", "dygraph", "inference")


class InferenceProgram(paddle.nn.Layer):
    """``model`` (images -> logits) traced once and run by Paddle Inference on the CPU (oneDNN,
    float32): the same function, at the engine's speed. Called like the model on an image
    tensor [B, C, H, W]; returns the logits as a tensor."""

    def __init__(self, model: paddle.nn.Layer, input_shape: Sequence[int],
                 threads: Optional[int] = None):
        super().__init__()
        from paddle import inference as paddle_infer

        spec = paddle.static.InputSpec([None, *input_shape], "float32", name="images")
        with tempfile.TemporaryDirectory(prefix="passl_mixer_eval_") as tmp:
            save_program(InferenceModel(model), os.path.join(tmp, PREFIX), [spec])
            config, _ = paddle_config(os.path.join(tmp, program_file(tmp)),
                                      os.path.join(tmp, PREFIX + ".pdiparams"),
                                      "cpu", "fp32", threads=threads or available_cores())
            self.predictor = paddle_infer.create_predictor(config)  # reads the files now
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def forward(self, images):
        self.input.copy_from_cpu(images.numpy())  # a CPU tensor: no device transfer
        self.predictor.run()
        return paddle.to_tensor(self.output.copy_to_cpu())


def choose_engine(engine: str, amp: Dict[str, Any]) -> str:
    """``auto``: the inference program on a CPU (float32), dygraph on a GPU or under AMP."""
    if engine not in ENGINES:
        raise ConfigError(f"Unknown evaluation engine {engine!r}; accepted: {', '.join(ENGINES)}.")
    on_cpu = paddle.get_device().startswith("cpu")
    if engine == "inference" and (not on_cpu or amp["enable"]):
        raise ConfigError("The inference evaluation engine runs float32 on a CPU; on a GPU or "
                          "with AMP use --engine dygraph (the default there).")
    if engine == "auto":
        return "inference" if on_cpu and not amp["enable"] else "dygraph"
    return engine


def evaluate_config(cfg: Dict, weights: Optional[str] = None, output_dir: Optional[str] = None,
                    config_name: str = "run", resume: Optional[str] = None,
                    engine: str = "auto", threads: Optional[int] = None) -> Dict[str, Any]:
    """Top-1, top-5 and loss of weights on ``cfg``'s ``data.val``; returns the metrics (and
    ``output_dir``: where ``eval.json`` and ``eval.log`` were written).

    ``weights``: a .pdckpt, .pdparams or .safetensors file (replaces the config's ``weights``);
    without it, ``weights`` or ``model.pretrained`` of the config. ``resume``: 'auto' (the
    newest complete checkpoint in ``train.output_dir``) or a checkpoint path, whose model
    weights are evaluated (``--eval-only --resume``). ``output_dir``: where the results go
    (default :func:`default_output_dir`), created only once the data, model and weights have
    been read. ``engine``: 'auto', 'dygraph' or 'inference' (see the module docstring);
    ``threads``: the inference program's CPU threads (default: the cores available)."""
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
        engine = choose_engine(engine, amp)
        if engine == "inference":
            from ..models.backbones.base import IsotropicBackbone

            backbone = getattr(model, "backbone", model)
            if not isinstance(backbone, IsotropicBackbone):
                engine = "dygraph"  # a host framework's backbone: no known input shape
            else:
                model = InferenceProgram(model, [backbone.in_channels, *backbone.img_size],
                                         threads)
    # nothing is created before the data, the model and the weights are found to be usable
    if dist.is_main():
        make_dir(output_dir, "evaluation output directory")
    logger = setup_logging(output_dir, filename="eval.log")
    logger.info(f"evaluating {source} on {val_loader.num_samples} images of data.val "
                f"({world_size} process(es), {engine})")
    metrics = evaluate(model, val_loader, amp=amp)
    path = os.path.join(output_dir, "eval.json")
    if dist.is_main():
        write_text(path, json.dumps(metrics, indent=1))
    logger.info(f"eval of {source}: top1 {metrics['top1']:.2f} top5 {metrics['top5']:.2f} "
                f"loss {metrics['loss']:.4f} ({metrics['num_samples']} images, "
                f"{metrics['num_samples'] / max(metrics['seconds'], 1e-9):.1f} img/s)")
    logger.info(f"results: {os.path.abspath(path)} (log: "
                f"{os.path.abspath(os.path.join(output_dir, 'eval.log'))})")
    return {**metrics, "output_dir": output_dir}
