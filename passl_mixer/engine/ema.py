"""Exponential moving average of model weights, evaluated alongside the model when enabled."""
from __future__ import annotations

import copy

import paddle

from ..models.ema import ema_update_


class ModelEma:
    """``ema = decay * ema + (1 - decay) * weights`` after every optimizer update.

    Holds its own copy of the model (in eval mode), so evaluating the EMA weights needs no
    swapping. Every floating-point state-dict entry is averaged, BatchNorm running statistics
    included; integer entries are copied. The update is
    :func:`passl_mixer.models.ema.ema_update_` with ``untrained="average"``.

    The copy is float32 whatever the model's precision: under AMP O2 the model's weights are
    float16/bfloat16, where ``ema * 0.9999 + w * 0.0001`` rounds back to ``ema`` (bfloat16
    keeps 8 significant bits), so a half-precision average would stop moving. With
    ``optimizer`` given, a weight the optimizer keeps a float32 master copy of (O2's
    multi-precision AdamW/Momentum do, from the first step on) is averaged from that copy
    rather than from its half-precision rounding.
    """

    def __init__(self, model: paddle.nn.Layer, decay: float = 0.9999, optimizer=None):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.optimizer = optimizer
        self.module = copy.deepcopy(model)
        self.module.to(dtype="float32")  # exact: every float16/bfloat16 value is a float32
        self.module.eval()
        for p in self.module.parameters():
            p.stop_gradient = True

    def _master_weights(self, model: paddle.nn.Layer) -> dict:
        """{state-dict key: the optimizer's float32 master copy} for the weights that have one."""
        master = (self.optimizer.state_dict().get("master_weights") or {}) \
            if self.optimizer is not None else {}
        return {key: master[p.name] for key, p in model.named_parameters() if p.name in master}

    def update(self, model: paddle.nn.Layer) -> None:
        ema_update_(self.module, model, self.decay, untrained="average",
                    source_values=self._master_weights(model))

    def state_dict(self):
        return self.module.state_dict()

    def set_state_dict(self, state):
        # Paddle's set_value refuses another dtype: a half-precision EMA (written before the
        # EMA was kept in float32) is converted here, exactly
        own = self.module.state_dict()
        self.module.set_state_dict(
            {k: v.astype(own[k].dtype) if isinstance(v, paddle.Tensor) and k in own
             and paddle.is_floating_point(v) and v.dtype != own[k].dtype else v
             for k, v in state.items()})
