"""Optimisers and per-iteration learning-rate schedules, built from the YAML sections

    optimizer:    {name: AdamW, lr: 0.001, weight_decay: 0.1, betas: [0.9, 0.999], grad_clip: 1.0}
    lr_scheduler: {name: Cosine, warmup_epochs: 5, min_lr: 1.0e-6}

``lr`` in the optimizer section is the peak learning rate; the schedule scales it per step.
Weight decay is never applied to biases and normalisation weights (every parameter with fewer
than two dimensions). ``grad_clip`` clips the global gradient norm before each update.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple

import paddle
import paddle.nn as nn

from . import cpu_kernels
from .errors import ConfigError
from .registry import LR_SCHEDULERS, OPTIMIZERS
from .schema import (NonNegativeFloat, NonNegativeInt, PositiveFloat, Probability,
                     check_value)


def split_decay(model: nn.Layer, skip: Sequence[str] = ()):
    """(decayed, not decayed) trainable parameters: biases, norms and ``skip`` names are not.

    A parameter counts as a per-channel vector (not decayed) by its non-singleton dimensions,
    not by ``ndim``: ResMLP's Affine alpha/beta are stored [1, 1, C], like timm's, which also
    leaves them undecayed."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.stop_gradient:
            continue
        if sum(d > 1 for d in p.shape) <= 1 or any(s in name for s in skip):
            no_decay.append(p)
        else:
            decay.append(p)
    return decay, no_decay


def _clip(grad_clip: Optional[float]):
    return nn.ClipGradByGlobalNorm(float(grad_clip)) if grad_clip else None


class AdamW(paddle.optimizer.AdamW):
    """``paddle.optimizer.AdamW`` (same arguments, accumulators and state dict) whose dygraph
    step on a CPU runs as one fused kernel (``cpu_kernels.adamw``) with the global-norm clip
    folded in. Paddle's CPU step is a single-core multiply per gradient for the clip and one
    single-core adamw kernel per parameter: 3.4% of a Mixer-S/16 step and 5% of a B/16 step
    at batch 16 (Intel Xeon). Anywhere else (a GPU, parameter groups, master weights, AMP's
    found_inf, another clip) it is Paddle's step. The clipped gradients are not written back
    (Paddle's clip scales ``param.grad`` in place); nothing reads them after the step."""

    def step(self):
        fused = self._fused_cpu_step()
        if fused is None:
            return super().step()
        with paddle.no_grad():
            params, grads, lrs, decays, clip_norm = fused
            block = paddle.static.default_main_program().global_block()
            self._create_accumulators(block, params)

            def accumulators(kind):
                return [self._get_accumulator_master(kind, p) for p in params]

            cpu_kernels.adamw(params, grads, accumulators(self._moment1_acc_str),
                              accumulators(self._moment2_acc_str),
                              accumulators(self._beta1_pow_acc_str),
                              accumulators(self._beta2_pow_acc_str), lrs, decays,
                              self._beta1, self._beta2, self._epsilon, clip_norm)
        return None

    def _fused_cpu_step(self):
        """(params, grads, per-parameter lr and decay, clip norm) when the fused step applies."""
        clip = self._grad_clip
        if (not paddle.in_dynamic_mode() or self._multi_precision
                or getattr(self, "_amsgrad", False)  # Paddle >= 3.0
                or self._lazy_mode or self._lr_ratio is not None
                or any(isinstance(group, dict) for group in self._param_groups)
                or not all(isinstance(v, (int, float)) for v in (self._beta1, self._beta2,
                                                                 self._epsilon,
                                                                 self._weight_decay))
                or (clip is not None and type(clip) is not nn.ClipGradByGlobalNorm)
                or self._get_auxiliary_var("found_inf") is not None):
            return None
        params, grads, lrs, decays = [], [], [], []
        lr = float(self.get_lr())
        for p in self._param_groups:
            if p.stop_gradient or p._grad_ivar() is None:
                continue
            g = p._grad_ivar()
            if (p.dtype != paddle.float32 or g.dtype != paddle.float32 or not p.place.is_cpu_place()
                    or getattr(p, "main_grad", None) is not None
                    or (clip is not None and not getattr(p, "need_clip", True))):
                return None
            scale = (p.optimize_attr or {}).get("learning_rate", 1.0)
            if not isinstance(scale, (int, float)):
                return None
            decayed = self._apply_decay_param_fun is None or self._apply_decay_param_fun(p.name)
            params.append(p)
            grads.append(g)
            lrs.append(lr * scale)
            decays.append(float(self._weight_decay) if decayed else 0.0)
        if not params or cpu_kernels.ops() is None:  # (built on first use)
            return None
        return params, grads, lrs, decays, float(clip.clip_norm) if clip is not None else 0.0


@OPTIMIZERS.register(name="AdamW")
def build_adamw(model: nn.Layer, lr: PositiveFloat, lr_scheduler=None,
                weight_decay: NonNegativeFloat = 0.05,
                betas: Tuple[Probability, Probability] = (0.9, 0.999), eps: PositiveFloat = 1e-8,
                grad_clip: Optional[PositiveFloat] = None, no_weight_decay: Sequence[str] = ()):
    """AdamW with decoupled weight decay, skipping biases, norms and ``no_weight_decay`` names."""
    decay, _ = split_decay(model, no_weight_decay)
    decay_names = {p.name for p in decay}
    return AdamW(
        learning_rate=lr_scheduler if lr_scheduler is not None else lr,
        parameters=[p for p in model.parameters() if not p.stop_gradient],
        beta1=betas[0], beta2=betas[1], epsilon=eps, weight_decay=weight_decay,
        apply_decay_param_fun=lambda name: name in decay_names, grad_clip=_clip(grad_clip))


@OPTIMIZERS.register(name="SGD")
def build_sgd(model: nn.Layer, lr: PositiveFloat, lr_scheduler=None, momentum: Probability = 0.9,
              weight_decay: NonNegativeFloat = 0.0, nesterov: bool = False,
              grad_clip: Optional[PositiveFloat] = None, no_weight_decay: Sequence[str] = ()):
    """SGD with momentum; L2 weight decay (if any) skips biases, norms and ``no_weight_decay``."""
    decay, no_decay = split_decay(model, no_weight_decay)
    groups: List[Dict] = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return paddle.optimizer.Momentum(
        learning_rate=lr_scheduler if lr_scheduler is not None else lr, momentum=momentum,
        parameters=groups, use_nesterov=nesterov, grad_clip=_clip(grad_clip))


@OPTIMIZERS.register(name="Lamb")
def build_lamb(model: nn.Layer, lr: PositiveFloat, lr_scheduler=None,
               weight_decay: NonNegativeFloat = 0.01,
               betas: Tuple[Probability, Probability] = (0.9, 0.999), eps: PositiveFloat = 1e-6,
               grad_clip: Optional[PositiveFloat] = None, no_weight_decay: Sequence[str] = (),
               always_adapt: bool = False):
    """LAMB (You et al., 2019; the ResMLP / DeiT III recipes): Adam steps rescaled per parameter
    by ||w|| / ||step||, decoupled weight decay skipping biases, norms and ``no_weight_decay``.
    Parameters without weight decay take plain Adam steps unless ``always_adapt`` (as timm's
    and apex's Lamb). timm's Lamb also clips the global gradient norm at 1 by default: set
    ``grad_clip: 1.0`` to match it."""
    decay, _ = split_decay(model, no_weight_decay)
    decay_names = {p.name for p in decay}
    extra = {"always_adapt": True} if always_adapt else {}  # the argument is newer than 2.4
    return paddle.optimizer.Lamb(
        learning_rate=lr_scheduler if lr_scheduler is not None else lr,
        parameters=[p for p in model.parameters() if not p.stop_gradient],
        lamb_weight_decay=weight_decay, beta1=betas[0], beta2=betas[1], epsilon=eps,
        exclude_from_weight_decay_fn=lambda p: p.name not in decay_names,
        grad_clip=_clip(grad_clip), **extra)


class WarmupDecay(paddle.optimizer.lr.LRScheduler):
    """Linear warmup from ``warmup_start_lr`` to ``base_lr`` over ``warmup_steps`` iterations,
    then cosine or linear decay to ``min_lr`` at ``total_steps``. Stepped once per update."""

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0,
                 decay: str = "cosine", min_lr: float = 0.0, warmup_start_lr: float = 0.0):
        if decay not in ("cosine", "linear"):
            raise ConfigError(f"lr decay must be 'cosine' or 'linear', got {decay!r}.")
        if total_steps <= 0 or warmup_steps > total_steps:
            raise ConfigError(f"lr schedule: need 0 <= warmup steps ({warmup_steps}) <= total "
                              f"steps ({total_steps}), and total steps > 0.")
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.decay, self.min_lr, self.warmup_start_lr = decay, min_lr, warmup_start_lr
        super().__init__(learning_rate=base_lr)

    def get_lr(self):
        step = self.last_epoch  # Paddle counts scheduler steps in last_epoch
        if step < self.warmup_steps:
            return self.warmup_start_lr + (self.base_lr - self.warmup_start_lr) * step / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        shape = 0.5 * (1.0 + math.cos(math.pi * t)) if self.decay == "cosine" else 1.0 - t
        return self.min_lr + (self.base_lr - self.min_lr) * shape


def _schedule(decay):
    def build(base_lr: float, total_steps: int, steps_per_epoch: int,
              warmup_epochs: NonNegativeFloat = 0.0, warmup_steps: Optional[NonNegativeInt] = None,
              min_lr: NonNegativeFloat = 0.0, warmup_start_lr: NonNegativeFloat = 0.0):
        given = f"warmup_steps {warmup_steps}"
        if warmup_steps is None:
            warmup_steps = int(round(warmup_epochs * steps_per_epoch))
            given = f"warmup_epochs {warmup_epochs:g} ({warmup_steps} steps)"
        if warmup_steps > total_steps:
            logging.getLogger("passl_mixer").warning(
                f"warning: lr_scheduler.{given} is longer than the run ({total_steps} steps): the "
                f"warmup is cut to {total_steps} steps, so lr rises until the last step and "
                f"never decays; shorten the warmup or train longer")
        return WarmupDecay(base_lr, total_steps, min(warmup_steps, total_steps), decay=decay,
                           min_lr=min_lr, warmup_start_lr=warmup_start_lr)
    build.__doc__ = f"Per-iteration warmup (in epochs or steps), then {decay} decay to min_lr."
    return build


LR_SCHEDULERS.register(_schedule("cosine"), name="Cosine")
LR_SCHEDULERS.register(_schedule("linear"), name="Linear")


def build_optimizer(opt_cfg: Dict, sched_cfg: Optional[Dict], model: nn.Layer,
                    total_steps: int, steps_per_epoch: int, lr_scale: float = 1.0):
    """Build (optimizer, lr_scheduler or None) for ``model`` from the two config sections."""
    if not isinstance(opt_cfg, dict):
        raise ConfigError(f"optimizer must be a mapping such as {{name: AdamW, lr: 0.001}}, got "
                          f"{opt_cfg!r}.")
    opt_cfg = dict(opt_cfg)
    if "lr" not in opt_cfg:
        raise ConfigError("optimizer.lr (the peak learning rate) is required.")
    lr = check_value(opt_cfg.pop("lr"), PositiveFloat, "optimizer.lr") * lr_scale
    scheduler = None
    if sched_cfg:
        scheduler = LR_SCHEDULERS.build(sched_cfg, config_path="lr_scheduler", base_lr=lr,
                                        total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    optimizer = OPTIMIZERS.build(opt_cfg, config_path="optimizer", model=model, lr=lr,
                                 lr_scheduler=scheduler)
    return optimizer, scheduler
