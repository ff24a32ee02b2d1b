"""The training loop: a plain loop of step, evaluate, checkpoint and log. The model's own
extension points (``after_step``, ``after_epoch``, ``after_evaluation``; see
passl_mixer/models/architectures/hooks.py) are called in it, where they apply.

One process per device (``python -m paddle.distributed.launch ...``); the model is wrapped in
``paddle.DataParallel``, which broadcasts rank 0's parameters at start and averages gradients.
Rank 0 alone writes files. A run is reproducible from its config: data order and augmentation
depend only on (seed, epoch, sample), Mixup on (seed, epoch, step), and Paddle's generator
(dropout, stochastic depth) is re-seeded from (seed, epoch, rank) at every epoch start, so a run
resumed from a checkpoint continues exactly as the uninterrupted run would have.
"""
from __future__ import annotations

import copy
import math
import os
import sys
import time
from typing import Any, Dict, List, Literal, Optional

import numpy as np
import paddle

from .. import data as data_lib
from ..checkpoints import load_initial_weights
from ..checkpoints.weights import float32_state_dict, set_weights
from ..config import dump_config
from ..errors import CheckpointError, ConfigError, PasslMixerError
from ..fileio import link_or_copy, make_dir
from ..logs import ProgressBar, format_eta, setup_logging
from ..optim import build_optimizer
from ..models import TrainingHooks, average_batchnorm_stats, convert_sync_batchnorm
from ..registry import LOGGERS, build_model
from ..schema import (Decay, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat,
                      PositiveInt, Section,
                      check_call, section, tracking, validate_section)
from . import checkpoint as ckpt
from . import distributed as dist
from .amp import AutocastForward, check_amp_support, cpu_bfloat16_training, o2_decorate_kwargs
from .ema import ModelEma
from .evaluate import evaluate
from .inputs import check_inputs
from .running_sums import RunningSums, WindowTotals

@section("")
class RunSection(Section):
    """The top level of a config: which sections there are (each is checked where it is read)."""
    model: Dict[str, Any] = Field(description="the model to build: {name: ImageClassifier, "
                                  "backbone: ..., head: ...} or an SSL architecture")
    data: Dict[str, Any] = Field(description="data.train, data.val and data.mixup")
    optimizer: Dict[str, Any] = Field(description="{name: AdamW|SGD, lr: ...}")
    lr_scheduler: Optional[Dict[str, Any]] = Field(None, description="{name: Cosine|Linear, ...}; "
                                                   "none: constant lr")
    train: Optional[Dict[str, Any]] = Field(None, description="the training loop (see train.*)")
    amp: Optional[Dict[str, Any]] = Field(None, description="mixed precision (see amp.*)")
    distributed: Optional[Dict[str, Any]] = Field(None, description="see distributed.*")
    export: Optional[Dict[str, Any]] = Field(None, description="tools/export_model.py options")
    weights: Optional[str] = Field(None, description="exact weights to start from or evaluate "
                                   "(.pdckpt, .pdparams or .safetensors)")


@section("data")
class DataSection(Section):
    train: Dict[str, Any] = Field(description="the training loader (see data.train.*)")
    val: Optional[Dict[str, Any]] = Field(None, description="the evaluation loader")
    mixup: Optional[Dict[str, Any]] = Field(None, description="Mixup/CutMix: mixup_alpha, "
                                            "cutmix_alpha, prob, switch_prob, label_smoothing")


class EmaSection(Section):
    decay: Decay = Field(0.9999, description="weight of the old average at each update")


@section("train")
class TrainSection(Section):
    epochs: PositiveInt = Field(1, description="passes over the training set")
    output_dir: Optional[str] = Field(None, description="where the run writes; default "
                                      "output/<config file name>")
    seed: NonNegativeInt = Field(0, description="seeds weights, data order and augmentation")
    accum_steps: PositiveInt = Field(1, description="micro-batches per optimizer update")
    base_batch_size: Optional[PositiveInt] = Field(
        None, description="if set, lr is scaled by global batch / base_batch_size")
    log_interval: PositiveInt = Field(20, description="optimizer updates between log lines")
    log_seconds: NonNegativeFloat = Field(60.0, description="also log a progress line at least "
                                          "every this many seconds (0: only every "
                                          "log_interval updates), so that a slow run shows "
                                          "progress in its log off a terminal")
    eval_interval: NonNegativeInt = Field(1, description="epochs between evaluations (0: only "
                                          "at the end)")
    save_interval: NonNegativeInt = Field(1, description="epochs between numbered checkpoints "
                                          "(0: none; latest and best are always kept)")
    keep_last: NonNegativeInt = Field(3, description="numbered checkpoints kept (0: all)")
    ema: Optional[EmaSection] = Field(None, description="{decay: 0.9999} keeps and evaluates "
                                      "an exponential moving average of the weights")
    to_static: bool = Field(False, description="train through paddle.jit.to_static")
    max_steps: Optional[PositiveInt] = Field(None, description="stop after this many optimizer "
                                             "updates")
    loggers: List[Dict[str, Any]] = Field(
        [{"name": "VisualDL"}, {"name": "MetricsJson"}],
        description="where training scalars and evaluation records go: a list of {name: ...} "
                    "sinks (passl_mixer.logs; plugins add more); [] writes neither vdl/ nor "
                    "metrics.json")


@section("amp")
class AmpSection(Section):
    enable: bool = Field(False, description="mixed precision (on CPU: bfloat16 O1 only, through "
                                            "paddle.jit.to_static)")
    dtype: Literal["bfloat16", "float16"] = Field("bfloat16", description="half precision type")
    level: Literal["O1", "O2"] = Field("O1", description="O1: per-op casts; O2: half weights")
    init_loss_scaling: PositiveFloat = Field(65536.0, description="float16 loss scale to start")


@section("distributed")
class DistributedSection(Section):
    sync_bn: bool = Field(False, description="BatchNorm statistics over all ranks")
    find_unused_parameters: bool = Field(False, description="paddle.DataParallel option")


class TrainingDiverged(PasslMixerError):
    """The loss became NaN or infinite."""


class Window:
    """The steps since the last log line: the loss and accuracy summed on the device
    (:class:`RunningSums`), and the host's own counts."""

    def __init__(self, epoch: int, first_step: int, first_micro_batch: int = 0):
        self.epoch = epoch
        self.first_step = first_step  # optimizer updates done before the window's first one
        self.first_micro_batch = first_micro_batch  # its first micro-batch's index in the epoch
        self.sums = RunningSums()
        self.images = 0
        self.data_time = 0.0
        self.start = time.time()


def validate_config(cfg: Dict) -> Dict[str, Dict[str, Any]]:
    """Check the run's sections; returns {section: its values with defaults filled in}."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"A config must be a mapping of sections, got {type(cfg).__name__}.")
    validate_section(RunSection, cfg, "")
    sections = {"data": validate_section(DataSection, cfg["data"], "data")}
    for key, schema in (("train", TrainSection), ("amp", AmpSection),
                        ("distributed", DistributedSection)):
        sections[key] = validate_section(schema, cfg.get(key), key)
    return sections


RUN_FILES = ("checkpoints", "vdl", "metrics.json", "config.yaml", "train.log", "eval.json",
             "eval")


def move_run_aside(output_dir: str) -> str:
    """Move a previous run's files into ``output_dir/replaced_<time>/``; returns that folder."""
    aside = os.path.join(output_dir, time.strftime("replaced_%Y%m%d_%H%M%S"))
    os.makedirs(aside, exist_ok=False)
    for name in RUN_FILES:
        if os.path.exists(os.path.join(output_dir, name)):
            os.replace(os.path.join(output_dir, name), os.path.join(aside, name))
    return aside


def dataset_num_classes(loader) -> Optional[int]:
    """How many classes a loader's labels span (None: unknown, e.g. an SSL view dataset)."""
    dataset = getattr(loader.dataset, "dataset", loader.dataset)  # MultiView wraps another
    names = getattr(dataset, "class_names", None)
    samples = getattr(dataset, "samples", None)
    labels = [label for _, label in samples] if samples else []
    if not names and not labels:
        return None
    return max(len(names or ()), max(labels, default=-1) + 1)


def check_class_count(model, loader, where: str) -> None:
    """A head with fewer outputs than the data has classes fails at the first step deep in
    Paddle; say so before training starts, with both numbers and the dataset root."""
    head_classes = getattr(model, "num_classes", None)
    data_classes = dataset_num_classes(loader)
    if not head_classes or data_classes is None or data_classes <= head_classes:
        return
    root = getattr(getattr(loader.dataset, "dataset", loader.dataset), "root", "?")
    raise ConfigError(
        f"model.head.num_classes is {head_classes}, but {where} ({root}) has {data_classes} "
        f"classes (labels 0..{data_classes - 1}): set -o model.head.num_classes={data_classes} "
        f"(or point {where}.dataset.root at the intended data).")


class Trainer:
    """Build everything from ``cfg`` (a merged config dict) and run ``train()`` or ``evaluate()``."""

    def __init__(self, cfg: Dict, config_name: str = "run", resume: Optional[str] = None,
                 overwrite: bool = False):
        """``resume``: None (a new run), 'auto' (the newest complete checkpoint of this run's
        output dir, if any) or a checkpoint path. A new run refuses an output dir that already
        holds checkpoints unless ``overwrite`` is set, which moves that run's files aside.
        Evaluation alone is :func:`~passl_mixer.engine.evaluation.evaluate_config`, which needs
        no training data and writes nothing into the run."""
        self.cfg = copy.deepcopy(cfg)
        # validated in the copy that is built from (tracking() knows its mappings' paths)
        sections = validate_config(self.cfg)
        self.train_cfg = t = sections["train"]
        self.amp_cfg = sections["amp"]
        self.dist_cfg = sections["distributed"]
        self.output_dir = t["output_dir"] or os.path.join("output", config_name)
        self.seed = t["seed"]
        self.accum_steps = t["accum_steps"]
        self.epochs = t["epochs"]

        dist.init()
        self.rank, self.world_size = dist.rank(), dist.world_size()
        # every missing dataset folder, list file or weights file at once, before anything
        # (the output dir, a log, a model) is created
        check_inputs(self.cfg, splits=("train", "val"), resume=resume)
        # before anything is written: never mix this run into another run's checkpoints
        self.resume_path = self._claim_output_dir(resume, overwrite)
        if dist.is_main():
            make_dir(self.output_dir, "train.output_dir")
        self.logger = setup_logging(self.output_dir)
        self.log = self.logger.info
        with tracking(self.cfg):  # config errors below name the key's full path
            self._build(sections["data"])
        if self.resume_path:
            self._resume(self.resume_path)
        self.sinks = [LOGGERS.build(entry, config_path=f"train.loggers[{i}]",
                                    output_dir=self.output_dir)
                      for i, entry in enumerate(self.train_cfg["loggers"])]

    def _build(self, data_cfg: Dict[str, Any]) -> None:
        t = self.train_cfg
        # Data first: a missing dataset is reported before any model is built.
        self.train_loader = data_lib.build_dataloader(data_cfg["train"], train=True, seed=self.seed,
                                                      world_size=self.world_size, rank=self.rank)
        self.val_loader = None
        if data_cfg.get("val"):
            self.val_loader = data_lib.build_dataloader(data_cfg["val"], train=False, seed=self.seed,
                                                        world_size=self.world_size, rank=self.rank)
        self.steps_per_epoch = len(self.train_loader) // self.accum_steps
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"The training set ({self.train_loader.num_samples} images) gives no full optimizer "
                f"step: per-device batch {self.train_loader.batch_size} x {self.world_size} "
                f"process(es) x accum_steps {self.accum_steps} is larger. Lower the batch size.")
        self.total_steps = self.epochs * self.steps_per_epoch
        # where this run stops: train.max_steps may end it before the last epoch
        self.run_steps = min(self.total_steps, t["max_steps"] or self.total_steps)
        self.run_epochs = min(self.epochs, math.ceil(self.run_steps / self.steps_per_epoch))
        self.global_batch = self.train_loader.batch_size * self.world_size * self.accum_steps

        paddle.seed(self.seed)  # same initial weights everywhere (DataParallel also broadcasts)
        self.model = build_model(self.cfg["model"])
        if not isinstance(self.model, TrainingHooks):
            raise ConfigError(f"model.name {self.cfg['model'].get('name')}: "
                              f"{type(self.model).__name__} does not inherit "
                              f"passl_mixer.models.TrainingHooks, the training loop's hooks "
                              f"(after_step, after_epoch, after_evaluation): declare it as "
                              f"class {type(self.model).__name__}(TrainingHooks, nn.Layer).")
        check_class_count(self.model, self.train_loader, "data.train")
        if self.val_loader is not None:
            check_class_count(self.model, self.val_loader, "data.val")
        load_initial_weights(self.model, self.cfg)  # weights: PATH or model.pretrained
        if self.dist_cfg["sync_bn"] and self.world_size > 1:
            # Paddle's nn.SyncBatchNorm on GPUs; ours on CPU, where Paddle's has no kernel
            self.model = convert_sync_batchnorm(self.model)
        self.mixup = None
        if data_cfg.get("mixup"):
            mixup_cfg = check_call(data_lib.Mixup, data_cfg["mixup"], "data.mixup",
                                   injected=("num_classes",))
            self.mixup = data_lib.Mixup(num_classes=getattr(self.model, "num_classes", None),
                                        **mixup_cfg)

        self.lr_scale = 1.0
        if t["base_batch_size"]:
            self.lr_scale = self.global_batch / float(t["base_batch_size"])
        self.optimizer, self.lr_scheduler = build_optimizer(
            self.cfg["optimizer"], self.cfg.get("lr_scheduler"), self.model, self.total_steps,
            self.steps_per_epoch, lr_scale=self.lr_scale)

        # the EMA copy is taken before AMP O2 casts the weights to half precision, and kept in
        # float32 (averaged from the optimizer's float32 master weights where there are some)
        self.ema = (ModelEma(self.model, decay=t["ema"]["decay"], optimizer=self.optimizer)
                    if t["ema"] else None)
        self._setup_amp()

        traced = t["to_static"] or self.cpu_bf16
        if traced and any(getattr(m, "use_recompute", False) for m in self.model.sublayers()):
            # outside dygraph Paddle's recompute only tags ops for its auto-parallel pass, which
            # to_static does not run: refuse rather than silently keep every activation
            why = ("train.to_static: true" if t["to_static"] else
                   "amp bfloat16 on CPU (which trains through paddle.jit.to_static)")
            raise ConfigError(f"{why} cannot be combined with model.backbone.use_recompute: "
                              f"true, because under paddle.jit.to_static Paddle's recompute "
                              f"recomputes nothing (memory use would stay as without it); set "
                              f"-o model.backbone.use_recompute=false, or turn the other off.")
        self.train_model = self.model
        if self.cpu_bf16:
            self.train_model = paddle.jit.to_static(
                AutocastForward(self.model, self.amp_dtype, self.amp_cfg["level"]), full_graph=True)
        elif t["to_static"]:
            self.train_model = paddle.jit.to_static(self.model, full_graph=True)
        if self.world_size > 1:
            self.train_model = paddle.DataParallel(
                self.train_model, find_unused_parameters=self.dist_cfg["find_unused_parameters"])

        self.epoch = 0          # next epoch to run
        self.global_step = 0    # optimizer updates done
        self.best_top1 = -1.0
        self.history = []

    def _claim_output_dir(self, resume: Optional[str], overwrite: bool) -> Optional[str]:
        """The checkpoint to resume from (None: start afresh), after making sure this run
        writes into no other run's checkpoints."""
        found = ckpt.epoch_checkpoints(self.output_dir)
        latest = os.path.join(ckpt.checkpoint_dir(self.output_dir), f"latest{ckpt.CKPT_EXT}")
        existing = ([latest] if os.path.isfile(latest) else []) + [p for _, p in reversed(found)]
        if resume == "auto":
            path = ckpt.find_resume_checkpoint(self.output_dir)
            if path is None and existing:
                reasons = []
                for p in existing:
                    try:
                        ckpt.load_checkpoint(p)
                    except PasslMixerError as exc:
                        reasons.append(str(exc))
                raise CheckpointError(
                    f"--resume auto: no checkpoint in {ckpt.checkpoint_dir(self.output_dir)} can "
                    f"be read, so there is nothing to resume and nothing was written. "
                    + " ".join(reasons) + " Move these files away to start afresh, or pass "
                    "--resume PATH with a readable checkpoint.")
            return path
        if resume is not None or not existing:
            return resume
        if not overwrite:
            raise ConfigError(
                f"{self.output_dir} already holds the checkpoints of a run "
                f"({', '.join(os.path.basename(p) for p in existing[:3])}"
                f"{', ...' if len(existing) > 3 else ''}), and a new run would replace them. "
                f"Continue that run with --resume auto, choose another directory with "
                f"-o train.output_dir=DIR, or pass --overwrite to move the old run's files aside "
                f"(into {self.output_dir}/replaced_<time>/) and start afresh.")
        if dist.is_main():
            aside = move_run_aside(self.output_dir)
            print(f"--overwrite: moved the previous run's files to {aside}", file=sys.stderr)
        dist.barrier()
        return None

    # -- set-up helpers ---------------------------------------------------------------------
    def _setup_amp(self):
        a = self.amp_cfg
        self.amp_enabled = bool(a["enable"])
        self.amp_dtype = a["dtype"]
        # bfloat16 O1 on a CPU: the forward is traced with the cast inside (AutocastForward)
        self.cpu_bf16 = False
        if self.amp_enabled and not paddle.device.is_compiled_with_cuda():
            if cpu_bfloat16_training(a["dtype"], a["level"]):
                self.cpu_bf16 = True
                self.log("amp: bfloat16 O1 on CPU, through paddle.jit.to_static (oneDNN bfloat16 "
                         "kernels; Paddle's dygraph has no CPU AMP); evaluation runs in float32. "
                         "Measured on Paddle 3.3.1 it is not always faster than float32 training: "
                         "on an Intel Xeon with AMX a Mixer-S/16 step took ~4x the float32 step "
                         "(README, bfloat16 training on a CPU; check yours with "
                         "scripts/check_cpu_bf16_training.py).")
            else:
                self.logger.warning(f"amp.enable is set with dtype {a['dtype']} level {a['level']}, "
                                    f"but this Paddle build has no GPU, and on CPU only bfloat16 "
                                    f"O1 trains in half precision (-o amp.dtype=bfloat16 -o "
                                    f"amp.level=O1; Paddle ignores AMP otherwise), so training "
                                    f"runs in float32.")
            self.amp_enabled = False  # no dygraph auto_cast on CPU (it would warn every step)
        self.scaler = None
        if self.amp_enabled:
            # before decorate: on a GPU without the dtype Paddle turns AMP off without a word
            check_amp_support(a["dtype"])
            if a["level"] == "O2":
                kwargs = o2_decorate_kwargs(self.model, a["dtype"])
                if "master_grad" not in kwargs and a["dtype"] == "float16":
                    self.logger.warning("This Paddle's amp.decorate has no master_grad: with "
                                        "float16 O2, optimizer.grad_clip computes the global norm "
                                        "in float16, which overflows above 256.")
                self.model, self.optimizer = paddle.amp.decorate(self.model, self.optimizer,
                                                                 **kwargs)
            if a["dtype"] == "float16":  # bfloat16 has float32's range and needs no scaling
                self.scaler = paddle.amp.GradScaler(init_loss_scaling=a["init_loss_scaling"])
        # evaluation (of the model and of the EMA) runs under the same precision as training
        self.amp_settings = {"enable": self.amp_enabled, "dtype": self.amp_dtype,
                             "level": a["level"]}

    # -- checkpoints ------------------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        return {
            # float32, so that the weights load into any float32 model (O2 keeps them in
            # float16/bfloat16; the optimizer's master weights, saved with it, are float32)
            "model": float32_state_dict(self.model.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler else None,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "ema": float32_state_dict(self.ema.state_dict()) if self.ema else None,
            "epoch": self.epoch, "global_step": self.global_step, "best_top1": self.best_top1,
            "history": self.history,
            # Paddle's generator is re-seeded from (seed, epoch, rank) each epoch; its state at
            # save time is kept for inspection and restored on resume.
            "rng": {"seed": self.seed, "paddle": paddle.get_rng_state(),
                    "numpy": np.random.get_state()},
            "config": self.cfg,
            "meta": {"paddle": paddle.__version__, "world_size": self.world_size,
                     "time": time.strftime("%Y-%m-%d %H:%M:%S")},
        }

    def _resume(self, resume: str):
        path = ckpt.find_resume_checkpoint(self.output_dir) if resume == "auto" else resume
        if path is None:
            self.log(f"--resume auto: no checkpoint in {self.output_dir}, starting from scratch")
            return
        state = ckpt.load_checkpoint(path)
        set_weights(self.model, state["model"], source=f"checkpoint '{path}'")
        self.optimizer.set_state_dict(state["optimizer"])
        if self.lr_scheduler and state.get("lr_scheduler"):
            self.lr_scheduler.set_state_dict(state["lr_scheduler"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema and state.get("ema"):
            self.ema.set_state_dict(state["ema"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.best_top1 = state.get("best_top1", -1.0)
        self.history = state.get("history", [])
        rng = state.get("rng") or {}
        if rng.get("paddle") is not None:
            self._restore_paddle_rng(rng["paddle"])
        if rng.get("numpy") is not None:
            np.random.set_state(rng["numpy"])
        self.log(f"resumed from {path}: epoch {self.epoch}, step {self.global_step}")
        self._warn_changed_settings(path, state)

    def _warn_changed_settings(self, path: str, state: Dict[str, Any]) -> None:
        """One warning line when the checkpoint's run had another train.epochs, world size or
        global batch: the run continues, but not as the checkpoint's run would have."""
        cfg = state.get("config") if isinstance(state.get("config"), dict) else {}
        train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
        world = (state.get("meta") or {}).get("world_size")
        batch = ((cfg.get("data") or {}).get("train") or {}).get("batch_size")
        changes = []
        epochs = train.get("epochs", 1)
        if epochs != self.epochs:
            changes.append(f"train.epochs {epochs} -> {self.epochs}")
        if world is not None and world != self.world_size:
            changes.append(f"world size {world} -> {self.world_size} process(es)")
        if world is not None and batch is not None:
            global_batch = batch * world * (train.get("accum_steps") or 1)
            if global_batch != self.global_batch:
                changes.append(f"global batch {global_batch} -> {self.global_batch}")
        if changes:
            self.logger.warning(
                f"warning: {path} was written by a run with other settings ({'; '.join(changes)}): "
                f"training continues from its step {self.global_step} under this run's settings "
                f"(total steps, lr schedule and batches follow them, not the checkpoint's)")

    def _restore_paddle_rng(self, saved) -> None:
        """paddle.get_rng_state() holds one generator state per visible device of the saving
        process (1 on CPU, N with N GPUs), and paddle.set_rng_state raises ValueError unless
        the list has this process's device count. The generator is re-seeded from (seed, epoch,
        rank) at every epoch start, so a checkpoint from another device count (8 GPUs -> 4, GPU
        -> CPU) resumes to the same weights without it: restore it only where it applies."""
        current = len(paddle.get_rng_state())
        note = (f"Paddle's generator state in the checkpoint is not restored: it holds "
                f"{len(saved)} device state(s) and this process has {current} device(s); the "
                f"generator is re-seeded at every epoch start, so training continues the same")
        if len(saved) != current:
            self.log(note)
            return
        try:
            paddle.set_rng_state(saved)
        except ValueError as exc:  # Paddle's documented refusal of a state list for another place
            self.log(f"{note} ({exc})")

    def _average_bn_stats(self) -> None:
        """Without sync_bn each rank's BatchNorm statistics drift apart: evaluation and
        checkpoints use their average over the ranks (a collective: every rank calls it; a
        no-op in one process)."""
        average_batchnorm_stats(self.model, self.ema.module if self.ema else None)

    def save(self, is_best: bool) -> None:
        """Write ``latest`` first, then link the numbered and best checkpoints to it, so that
        ``latest`` is never older than any other checkpoint, whenever a kill lands."""
        if not dist.is_main():
            return
        cdir = ckpt.checkpoint_dir(self.output_dir)
        latest = os.path.join(cdir, f"latest{ckpt.CKPT_EXT}")
        ckpt.save_checkpoint(self.state(), latest)
        save_every = int(self.train_cfg["save_interval"])
        if save_every > 0 and (self.epoch % save_every == 0 or self.epoch == self.epochs):
            link_or_copy(latest, os.path.join(cdir, f"epoch_{self.epoch:04d}{ckpt.CKPT_EXT}"))
            ckpt.prune_epoch_checkpoints(self.output_dir, int(self.train_cfg["keep_last"]))
        if is_best:
            link_or_copy(latest, os.path.join(cdir, f"best{ckpt.CKPT_EXT}"))

    # -- the loop ---------------------------------------------------------------------------
    def _forward_backward(self, images, target, sync: bool):
        """One micro-batch. ``sync=False`` (a non-final micro-batch of a multi-process run):
        gradients accumulate locally, and the last micro-batch all-reduces their sum."""
        def forward_backward():
            with paddle.amp.auto_cast(enable=self.amp_enabled, dtype=self.amp_dtype,
                                      level=self.amp_cfg["level"]):
                out = self.train_model(images, target)
            loss = out["loss"] / self.accum_steps
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            return out

        if self.world_size > 1 and not sync:
            # Forward AND backward inside no_sync(): paddle.DataParallel decides in forward()
            # (grad_need_sync -> reducer.prepare_for_backward) whether the coming backward
            # all-reduces, so a no_sync() around the backward alone still synchronises.
            with self.train_model.no_sync():
                return forward_backward()
        return forward_backward()

    def _optimizer_step(self):
        # Nothing here reads the device back, with one exception outside this code: with
        # amp.dtype float16, Paddle's GradScaler has the optimizer test its found_inf tensor
        # on the host (`if found_inf:` in Optimizer._create_optimization_pass) to skip the
        # update, once per step. bfloat16, which needs no loss scaling, has no such read.
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.clear_grad()
        if self.lr_scheduler:
            self.lr_scheduler.step()
        if self.ema:
            self.ema.update(self.model)
        self.global_step += 1

    def _describe(self):
        m = self.model
        n_params = sum(int(np.prod(p.shape)) for p in m.parameters())
        self.log(f"model: {self.cfg['model'].get('name')} with {n_params:,} parameters")
        self.log(f"data: {self.train_loader.num_samples} training images"
                 + (f", {self.val_loader.num_samples} validation images" if self.val_loader else ""))
        self.log(f"global batch {self.global_batch} = {self.train_loader.batch_size} per device x "
                 f"{self.world_size} process(es) x {self.accum_steps} accumulation step(s); "
                 f"{self.steps_per_epoch} steps/epoch, {self.epochs} epochs, {self.total_steps} steps"
                 + (f"; train.max_steps stops the run after {self.run_steps} steps (the lr "
                    f"schedule still spans {self.total_steps})"
                    if self.run_steps < self.total_steps else "")
                 + (f"; lr scaled by {self.lr_scale:.3g}" if self.lr_scale != 1.0 else ""))
        warmup = getattr(self.lr_scheduler, "warmup_steps", 0)
        if self.run_steps < warmup:
            self.logger.warning(f"warning: the lr warmup ({warmup} steps) is longer than the run "
                                f"(train.max_steps {self.run_steps}): lr never reaches "
                                f"optimizer.lr")
        self.log(f"output: {os.path.abspath(self.output_dir)}")

    def train(self) -> Dict[str, Any]:
        t = self.train_cfg
        if dist.is_main():
            make_dir(self.output_dir, "train.output_dir")
            ckpt.remove_torn_writes(self.output_dir)
            dump_config(self.cfg, os.path.join(self.output_dir, "config.yaml"))
        self._describe()
        for sink in self.sinks:
            sink.begin(self.history)  # a resumed run's evaluations so far
        max_steps = t["max_steps"]
        log_every = max(1, int(t["log_interval"]))
        log_seconds = float(t["log_seconds"])
        run_start, steps_at_start = time.time(), self.global_step
        last = None  # the last log line's values (the progress bar shows its loss)
        last_line = run_start  # when the last log line was written
        while self.epoch < self.epochs and not (max_steps and self.global_step >= max_steps):
            epoch = self.epoch
            self.train_loader.set_epoch(epoch)
            paddle.seed(self.seed * 1_000_003 + epoch * 1_009 + self.rank)
            self.train_model.train()
            bar = ProgressBar(min(self.steps_per_epoch, self.run_steps - epoch * self.steps_per_epoch),
                              desc=f"epoch {epoch + 1}/{self.run_epochs}")
            # The loss and accuracy stay on the device between log lines: reading them every
            # micro-batch (float(loss)) would make the host wait for each step's kernels before
            # it can queue the next step's. The window is read at log lines and at the epoch's
            # end, before anything is evaluated or saved.
            window = Window(epoch, self.global_step)
            tick = time.time()
            micro = 0
            for i, (images, labels) in enumerate(self.train_loader):
                if i >= self.steps_per_epoch * self.accum_steps:
                    break  # leftover micro-batches that cannot fill an update
                window.data_time += time.time() - tick
                target = labels
                if self.mixup is not None:
                    rng = np.random.default_rng([self.seed, epoch, i])
                    images, target = self.mixup(images, labels, rng)
                micro += 1
                out = self._forward_backward(images, target, sync=micro == self.accum_steps)
                window.sums.add(out["loss"], out.get("acc1"))
                window.images += labels.shape[0] * self.world_size
                if micro == self.accum_steps:
                    micro = 0
                    self._optimizer_step()
                    # e.g. MoCo v3 and BYOL move their momentum encoders here
                    self.model.after_step(self.global_step, self.total_steps)
                    done = self.global_step
                    bar.update(done - epoch * self.steps_per_epoch,
                               f"loss {last['loss']:.4f}" if last else "")
                    if done % log_every == 0 or done == self.run_steps:
                        last = self._log_window(window, run_start, steps_at_start)
                        window = Window(epoch, done, first_micro_batch=i + 1)
                        last_line = time.time()
                    elif log_seconds and dist.is_main() and time.time() - last_line >= log_seconds:
                        # rank 0's own numbers so far in this window (no collective: the
                        # ranks' clocks differ; a read, but only on these rare lines); the
                        # window goes on to its log_interval line
                        last = self._log_window(window, run_start, steps_at_start,
                                                collective=False)
                        last_line = time.time()
                    if max_steps and done >= max_steps:
                        break
                tick = time.time()
            bar.close()
            # the steps since the last log line: no evaluation or checkpoint of weights that
            # a non-finite loss has reached (a collective: every rank reads at the epoch end)
            if window.sums.micro_batches:
                self._check_finite(window, window.sums.read(collective=True))
            self.epoch = epoch + 1
            self.model.after_epoch(self.epoch)
            finished = self.epoch == self.epochs or (max_steps and self.global_step >= max_steps)
            metrics = self._maybe_evaluate(finished)
            if metrics is not None:
                self.model.after_evaluation(metrics)
            is_best = metrics is not None and metrics["top1"] > self.best_top1
            if is_best:
                self.best_top1 = metrics["top1"]
            self._average_bn_stats()  # the checkpoint holds the statistics evaluated above
            self.save(is_best)
        self._finish(last)
        return {"best_top1": self.best_top1, "history": self.history,
                "output_dir": self.output_dir}

    def _log_window(self, window: Window, run_start, steps_at_start, collective=True):
        """Log the window's averages and the ETA; ``collective``: averaged over the ranks (every
        rank logs at the same steps, so the collective lines up), checked for a non-finite loss
        and written to the sinks, else (a time-based progress line) this rank's numbers,
        logged only."""
        totals = window.sums.read(collective)  # the window's one device->host read
        if collective:
            self._check_finite(window, totals)
        elapsed = time.time() - window.start
        ips = window.images / max(elapsed, 1e-9)
        rate = (time.time() - run_start) / max(1, self.global_step - steps_at_start)
        lr = self.optimizer.get_lr()
        values = {"loss": totals.loss, "train_acc1": totals.acc1, "lr": lr, "img_per_s": ips}
        self.log(f"epoch {self.epoch + 1}/{self.run_epochs} step {self.global_step}/{self.run_steps} "
                 f"loss {values['loss']:.4f} lr {lr:.3e} {ips:.1f} img/s "
                 f"data {window.data_time / max(1, totals.micro_batches) * 1000:.0f} ms/batch "
                 f"eta {format_eta(rate * (self.run_steps - self.global_step))}")
        if collective:
            for sink in self.sinks:
                sink.scalars(self.global_step, {f"train/{k}": v for k, v in values.items()})
        return values

    def _maybe_evaluate(self, finished: bool) -> Optional[Dict[str, float]]:
        self._average_bn_stats()  # on every rank, even when not evaluating (a collective)
        every = int(self.train_cfg["eval_interval"])
        if self.val_loader is None or not (finished or (every > 0 and self.epoch % every == 0)):
            return None
        metrics = evaluate(self.model, self.val_loader, desc="eval", amp=self.amp_settings)
        record = {"epoch": self.epoch, "step": self.global_step, **metrics}
        msg = (f"eval epoch {self.epoch}: top1 {metrics['top1']:.2f} top5 {metrics['top5']:.2f} "
               f"loss {metrics['loss']:.4f} ({metrics['num_samples']} images)")
        if self.ema:
            ema = evaluate(self.ema.module, self.val_loader, desc="eval ema",
                           amp=self.amp_settings)
            record.update({f"ema_{k}": v for k, v in ema.items()})
            msg += f"; EMA top1 {ema['top1']:.2f} top5 {ema['top5']:.2f}"
        self.log(msg)
        self.history.append(record)
        scalars = {f"val/{k}": v for k, v in record.items()
                   if k in ("top1", "top5", "loss", "ema_top1", "ema_top5")}
        for sink in self.sinks:
            sink.scalars(self.global_step, scalars)
            sink.evaluation(record)
        return metrics

    def _check_finite(self, window: Window, totals: WindowTotals) -> None:
        """Stop the run if a loss in ``window`` was NaN or infinite (``totals``: read over all
        ranks, so that every rank stops at the same step), before anything is evaluated or
        saved: the weights have been updated with non-finite gradients since."""
        if totals.first_non_finite is None:
            return
        first_step = window.first_step + totals.first_non_finite // self.accum_steps + 1
        micro_batch = window.first_micro_batch + totals.first_non_finite + 1
        good = ckpt.find_resume_checkpoint(self.output_dir)
        where = f"the last good checkpoint is {good}" if good else "no checkpoint was written yet"
        became = "nan" if math.isnan(totals.loss) else "inf"
        raise TrainingDiverged(
            f"The loss became {became} between optimizer steps {window.first_step + 1} and "
            f"{self.global_step} (first at step {first_step}: epoch {window.epoch + 1}, "
            f"micro-batch {micro_batch}); training stopped before writing a checkpoint, and "
            f"{where}. Lower optimizer.lr, raise the warmup, or set optimizer.grad_clip, then "
            f"resume with --resume auto.")

    def _finish(self, last):
        cdir = os.path.abspath(ckpt.checkpoint_dir(self.output_dir))
        self.log(f"done: {self.global_step} steps; best top1 "
                 f"{self.best_top1:.2f}" if self.best_top1 >= 0 else f"done: {self.global_step} steps")
        written = [f"{name}{ckpt.CKPT_EXT}" for name in ("latest", "best")
                   if os.path.isfile(os.path.join(cdir, f"{name}{ckpt.CKPT_EXT}"))]
        if written:  # best exists only for runs that evaluate (not SSL pretraining)
            self.log(f"checkpoints: {cdir} ({', '.join(written)})")
        for sink in self.sinks:  # VisualDL's says where its logs are
            sink.close()

    def evaluate(self) -> Dict[str, float]:
        """Evaluate the current weights on data.val (logged and returned; no file written)."""
        self._average_bn_stats()
        if self.val_loader is None:
            raise ConfigError("Evaluation needs a 'data.val' section.")
        metrics = evaluate(self.model, self.val_loader, amp=self.amp_settings)
        self.log(f"eval: top1 {metrics['top1']:.2f} top5 {metrics['top5']:.2f} "
                 f"loss {metrics['loss']:.4f} ({metrics['num_samples']} images)")
        return metrics
