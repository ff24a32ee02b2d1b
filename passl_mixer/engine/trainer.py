"""The training loop: a plain loop of step, evaluate, checkpoint and log.

One process per device (``python -m paddle.distributed.launch ...``); the model is wrapped in
``paddle.DataParallel``, which broadcasts rank 0's parameters at start and averages gradients.
Rank 0 alone writes files. A run is reproducible from its config: data order and augmentation
depend only on (seed, epoch, sample), Mixup on (seed, epoch, step), and Paddle's generator
(dropout, stochastic depth) is re-seeded from (seed, epoch, rank) at every epoch start, so a run
resumed from a checkpoint continues exactly as the uninterrupted run would have.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from typing import Any, Dict, Optional

import numpy as np
import paddle

from .. import data as data_lib
from ..config import check_keys, dump_config
from ..errors import ConfigError, PasslMixerError
from ..fileio import link_or_copy, write_text
from ..optim import build_optimizer
from ..models import convert_sync_batchnorm
from ..registry import build_model
from . import checkpoint as ckpt
from . import distributed as dist
from .ema import ModelEma
from .evaluate import evaluate
from .logger import ProgressBar, VisualDLWriter, format_eta, setup_logging

TOP_LEVEL_KEYS = ("model", "data", "optimizer", "lr_scheduler", "train", "amp", "distributed",
                  "export", "weights")
TRAIN_DEFAULTS: Dict[str, Any] = dict(
    epochs=1,             # passes over the training set
    output_dir=None,      # default: output/<config name>
    seed=0,
    accum_steps=1,        # gradient accumulation: micro-batches per optimizer update
    base_batch_size=None,  # if set, lr is scaled by global_batch / base_batch_size
    log_interval=20,      # optimizer updates between log lines
    eval_interval=1,      # epochs between evaluations (0: only at the end)
    save_interval=1,      # epochs between numbered checkpoints (latest/best are always kept)
    keep_last=3,          # numbered checkpoints kept (0: all)
    ema=None,             # {decay: 0.9999} to keep and evaluate an EMA of the weights
    to_static=False,      # train through paddle.jit.to_static (static-graph conversion)
    max_steps=None,       # stop after this many optimizer updates (smoke tests)
)
AMP_DEFAULTS: Dict[str, Any] = dict(enable=False, dtype="bfloat16", level="O1",
                                    init_loss_scaling=65536.0)
DISTRIBUTED_DEFAULTS: Dict[str, Any] = dict(sync_bn=False, find_unused_parameters=False)
DATA_KEYS = ("train", "val", "mixup")


class TrainingDiverged(PasslMixerError):
    """The loss became NaN or infinite."""


def section(cfg: Dict, key: str, defaults: Dict[str, Any]) -> Dict[str, Any]:
    value = cfg.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"Config section '{key}' must be a mapping, got {value!r}.")
    check_keys(value, defaults, f"the '{key}' section")
    return {**defaults, **value}


def validate_config(cfg: Dict) -> None:
    check_keys(cfg, TOP_LEVEL_KEYS, "the config's top level")
    for key in ("model", "data", "optimizer"):
        if key not in cfg:
            raise ConfigError(f"The config needs a '{key}' section.")
    if not isinstance(cfg["data"], dict) or "train" not in cfg["data"]:
        raise ConfigError("The 'data' section needs a 'train' subsection.")
    check_keys(cfg["data"], DATA_KEYS, "the 'data' section")


class Trainer:
    """Build everything from ``cfg`` (a merged config dict) and run ``train()`` or ``evaluate()``."""

    def __init__(self, cfg: Dict, config_name: str = "run", resume: Optional[str] = None):
        validate_config(cfg)
        self.cfg = copy.deepcopy(cfg)
        self.train_cfg = section(cfg, "train", TRAIN_DEFAULTS)
        self.amp_cfg = section(cfg, "amp", AMP_DEFAULTS)
        self.dist_cfg = section(cfg, "distributed", DISTRIBUTED_DEFAULTS)
        t = self.train_cfg
        self.output_dir = t["output_dir"] or os.path.join("output", config_name)
        self.seed = int(t["seed"])
        self.accum_steps = int(t["accum_steps"])
        if self.accum_steps < 1:
            raise ConfigError(f"train.accum_steps must be >= 1, got {self.accum_steps}.")

        dist.init()
        self.rank, self.world_size = dist.rank(), dist.world_size()
        self.logger = setup_logging(self.output_dir)
        self.log = self.logger.info

        # Data first: a missing dataset is reported before any model is built.
        data_cfg = cfg["data"]
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
        self.epochs = int(t["epochs"])
        self.total_steps = self.epochs * self.steps_per_epoch
        self.global_batch = self.train_loader.batch_size * self.world_size * self.accum_steps

        paddle.seed(self.seed)  # same initial weights everywhere (DataParallel also broadcasts)
        self.model = build_model(cfg["model"])
        # here, not at the top: passl_mixer.checkpoints itself imports the engine
        from ..checkpoints import load_initial_weights
        load_initial_weights(self.model, self.cfg)  # weights: PATH or model.pretrained
        if self.dist_cfg["sync_bn"] and self.world_size > 1:
            # ours, not paddle.nn.SyncBatchNorm: Paddle's has no CPU kernel (gloo runs fail)
            self.model = convert_sync_batchnorm(self.model)
        num_classes = getattr(self.model, "num_classes", None)
        self.mixup = None
        if data_cfg.get("mixup"):
            self.mixup = data_lib.Mixup(num_classes=num_classes, **data_cfg["mixup"])

        lr_scale = 1.0
        if t["base_batch_size"]:
            lr_scale = self.global_batch / float(t["base_batch_size"])
        self.optimizer, self.lr_scheduler = build_optimizer(
            cfg["optimizer"], cfg.get("lr_scheduler"), self.model, self.total_steps,
            self.steps_per_epoch, lr_scale=lr_scale)
        self.lr_scale = lr_scale

        self._setup_amp()
        self.ema = ModelEma(self.model, **t["ema"]) if t["ema"] else None

        self.train_model = self.model
        if t["to_static"]:
            self.train_model = paddle.jit.to_static(self.model, full_graph=True)
        if self.world_size > 1:
            self.train_model = paddle.DataParallel(
                self.train_model, find_unused_parameters=self.dist_cfg["find_unused_parameters"])

        self.epoch = 0          # next epoch to run
        self.global_step = 0    # optimizer updates done
        self.best_top1 = -1.0
        self.history = []
        if resume:
            self._resume(resume)
        self.vdl = VisualDLWriter(os.path.join(self.output_dir, "vdl"))

    # -- set-up helpers ---------------------------------------------------------------------
    def _setup_amp(self):
        a = self.amp_cfg
        self.amp_enabled = bool(a["enable"])
        self.amp_dtype = a["dtype"]
        if a["dtype"] not in ("bfloat16", "float16") or a["level"] not in ("O1", "O2"):
            raise ConfigError(f"amp: dtype must be bfloat16 or float16 and level O1 or O2, got "
                              f"dtype={a['dtype']!r}, level={a['level']!r}.")
        if self.amp_enabled and not paddle.device.is_compiled_with_cuda():
            self.logger.warning("amp.enable is set but this Paddle build has no GPU: Paddle ignores "
                                "AMP on CPU, so training runs in float32.")
            self.amp_enabled = False
        self.scaler = None
        if self.amp_enabled:
            if a["level"] == "O2":
                self.model, self.optimizer = paddle.amp.decorate(
                    self.model, self.optimizer, level="O2", dtype=a["dtype"])
            if a["dtype"] == "float16":  # bfloat16 has float32's range and needs no scaling
                self.scaler = paddle.amp.GradScaler(init_loss_scaling=a["init_loss_scaling"])

    # -- checkpoints ------------------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler else None,
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "ema": self.ema.state_dict() if self.ema else None,
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
        ckpt.set_weights(self.model, state["model"], source=f"checkpoint '{path}'")
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
            paddle.set_rng_state(rng["paddle"])
        if rng.get("numpy") is not None:
            np.random.set_state(rng["numpy"])
        self.log(f"resumed from {path}: epoch {self.epoch}, step {self.global_step}")

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
        with paddle.amp.auto_cast(enable=self.amp_enabled, dtype=self.amp_dtype,
                                  level=self.amp_cfg["level"]):
            out = self.train_model(images, target)
        loss = out["loss"] / self.accum_steps
        if self.world_size > 1 and not sync:
            with self.train_model.no_sync():  # accumulate locally; all-reduce on the last one
                (self.scaler.scale(loss) if self.scaler else loss).backward()
        else:
            (self.scaler.scale(loss) if self.scaler else loss).backward()
        return out

    def _optimizer_step(self):
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
        # architectures with momentum/target encoders (MoCo v3, BYOL) update them here
        after_step = getattr(self.model, "after_train_step", None)
        if after_step is not None:
            after_step(self.global_step, self.total_steps)

    def _describe(self):
        m = self.model
        n_params = sum(int(np.prod(p.shape)) for p in m.parameters())
        self.log(f"model: {self.cfg['model'].get('name')} with {n_params:,} parameters")
        self.log(f"data: {self.train_loader.num_samples} training images"
                 + (f", {self.val_loader.num_samples} validation images" if self.val_loader else ""))
        self.log(f"global batch {self.global_batch} = {self.train_loader.batch_size} per device x "
                 f"{self.world_size} process(es) x {self.accum_steps} accumulation step(s); "
                 f"{self.steps_per_epoch} steps/epoch, {self.epochs} epochs, {self.total_steps} steps"
                 + (f"; lr scaled by {self.lr_scale:.3g}" if self.lr_scale != 1.0 else ""))
        self.log(f"output: {os.path.abspath(self.output_dir)}")

    def train(self) -> Dict[str, Any]:
        t = self.train_cfg
        if dist.is_main():
            os.makedirs(self.output_dir, exist_ok=True)
            ckpt.remove_torn_writes(self.output_dir)
            dump_config(self.cfg, os.path.join(self.output_dir, "config.yaml"))
        self._describe()
        max_steps = t["max_steps"]
        log_every = max(1, int(t["log_interval"]))
        run_start, steps_at_start = time.time(), self.global_step
        last = None
        while self.epoch < self.epochs and not (max_steps and self.global_step >= max_steps):
            epoch = self.epoch
            self.train_loader.set_epoch(epoch)
            paddle.seed(self.seed * 1_000_003 + epoch * 1_009 + self.rank)
            self.train_model.train()
            bar = ProgressBar(self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.epochs}")
            window = {"loss": 0.0, "acc1": 0.0, "n": 0, "images": 0, "data_time": 0.0}
            window_start = tick = time.time()
            micro = 0
            for i, (images, labels) in enumerate(self.train_loader):
                if i >= self.steps_per_epoch * self.accum_steps:
                    break  # leftover micro-batches that cannot fill an update
                window["data_time"] += time.time() - tick
                target = labels
                if self.mixup is not None:
                    rng = np.random.default_rng([self.seed, epoch, i])
                    images, target = self.mixup(images, labels, rng)
                micro += 1
                out = self._forward_backward(images, target, sync=micro == self.accum_steps)
                loss = float(out["loss"])
                if not math.isfinite(loss):
                    self._diverged(loss, epoch, i)
                window["loss"] += loss
                window["acc1"] += float(out.get("acc1", 0.0))
                window["n"] += 1
                window["images"] += labels.shape[0] * self.world_size
                if micro == self.accum_steps:
                    micro = 0
                    self._optimizer_step()
                    done = self.global_step
                    bar.update(done - epoch * self.steps_per_epoch, f"loss {loss:.4f}")
                    if done % log_every == 0 or done == self.total_steps:
                        last = self._log_window(window, window_start, run_start, steps_at_start)
                        window = {k: 0 for k in window}
                        window_start = time.time()
                    if max_steps and done >= max_steps:
                        break
                tick = time.time()
            bar.close()
            self.epoch = epoch + 1
            finished = self.epoch == self.epochs or (max_steps and self.global_step >= max_steps)
            metrics = self._maybe_evaluate(finished)
            is_best = metrics is not None and metrics["top1"] > self.best_top1
            if is_best:
                self.best_top1 = metrics["top1"]
            self.save(is_best)
        self._finish(last)
        return {"best_top1": self.best_top1, "history": self.history,
                "output_dir": self.output_dir}

    def _log_window(self, window, window_start, run_start, steps_at_start):
        # average over ranks (every rank logs at the same steps, so the collective lines up)
        loss_sum, acc_sum, n = dist.all_reduce_sum([window["loss"], window["acc1"], window["n"]])
        n = max(1.0, n)
        elapsed = time.time() - window_start
        ips = window["images"] / max(elapsed, 1e-9)
        rate = (time.time() - run_start) / max(1, self.global_step - steps_at_start)
        lr = self.optimizer.get_lr()
        values = {"loss": loss_sum / n, "train_acc1": acc_sum / n, "lr": lr,
                  "img_per_s": ips}
        self.log(f"epoch {self.epoch + 1}/{self.epochs} step {self.global_step}/{self.total_steps} "
                 f"loss {values['loss']:.4f} lr {lr:.3e} {ips:.1f} img/s "
                 f"data {window['data_time'] / max(1, window['n']) * 1000:.0f} ms/batch "
                 f"eta {format_eta(rate * (self.total_steps - self.global_step))}")
        self.vdl.scalars(values, self.global_step, prefix="train/")
        return values

    def _maybe_evaluate(self, finished: bool) -> Optional[Dict[str, float]]:
        every = int(self.train_cfg["eval_interval"])
        if self.val_loader is None or not (finished or (every > 0 and self.epoch % every == 0)):
            return None
        metrics = evaluate(self.model, self.val_loader, desc="eval")
        record = {"epoch": self.epoch, "step": self.global_step, **metrics}
        msg = (f"eval epoch {self.epoch}: top1 {metrics['top1']:.2f} top5 {metrics['top5']:.2f} "
               f"loss {metrics['loss']:.4f} ({metrics['num_samples']} images)")
        if self.ema:
            ema = evaluate(self.ema.module, self.val_loader, desc="eval ema")
            record.update({f"ema_{k}": v for k, v in ema.items()})
            msg += f"; EMA top1 {ema['top1']:.2f} top5 {ema['top5']:.2f}"
        self.log(msg)
        self.vdl.scalars({k: v for k, v in record.items() if k in
                          ("top1", "top5", "loss", "ema_top1", "ema_top5")},
                         self.global_step, prefix="val/")
        self.history.append(record)
        if dist.is_main():
            write_text(os.path.join(self.output_dir, "metrics.json"),
                       json.dumps(self.history, indent=1))
        return metrics

    def _diverged(self, loss, epoch, i):
        good = ckpt.find_resume_checkpoint(self.output_dir)
        where = f"the last good checkpoint is {good}" if good else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"The loss became {loss} at epoch {epoch + 1}, micro-batch {i + 1} (optimizer step "
            f"{self.global_step + 1}); training stopped and {where}. Lower optimizer.lr, raise the "
            f"warmup, or set optimizer.grad_clip, then resume with --resume auto.")

    def _finish(self, last):
        self.vdl.close()
        cdir = os.path.abspath(ckpt.checkpoint_dir(self.output_dir))
        self.log(f"done: {self.global_step} steps; best top1 "
                 f"{self.best_top1:.2f}" if self.best_top1 >= 0 else f"done: {self.global_step} steps")
        self.log(f"checkpoints: {cdir} (latest{ckpt.CKPT_EXT}, best{ckpt.CKPT_EXT})")
        self.log(f"VisualDL logs: {os.path.abspath(os.path.join(self.output_dir, 'vdl'))} "
                 f"(view with: visualdl --logdir {os.path.join(self.output_dir, 'vdl')})")

    def evaluate(self) -> Dict[str, float]:
        if self.val_loader is None:
            raise ConfigError("Evaluation needs a 'data.val' section.")
        metrics = evaluate(self.model, self.val_loader)
        self.log(f"eval: top1 {metrics['top1']:.2f} top5 {metrics['top5']:.2f} "
                 f"loss {metrics['loss']:.4f} ({metrics['num_samples']} images)")
        if dist.is_main():
            write_text(os.path.join(self.output_dir, "eval.json"), json.dumps(metrics, indent=1))
        return metrics
