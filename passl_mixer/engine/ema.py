"""Exponential moving average of model weights, evaluated alongside the model when enabled."""
from __future__ import annotations

import copy

import paddle


class ModelEma:
    """``ema = decay * ema + (1 - decay) * weights`` after every optimizer update.

    Holds its own copy of the model (in eval mode), so evaluating the EMA weights needs no
    swapping. Buffers are copied as they are.

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

    @paddle.no_grad()
    def update(self, model: paddle.nn.Layer) -> None:
        current = model.state_dict()
        master = self._master_weights(model)
        for name, ema_value in self.module.state_dict().items():
            value = master.get(name, current[name]).detach()
            if paddle.is_floating_point(ema_value):
                ema_value.set_value(ema_value * self.decay + value.astype(ema_value.dtype) * (1.0 - self.decay))
            else:
                ema_value.set_value(value)

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
