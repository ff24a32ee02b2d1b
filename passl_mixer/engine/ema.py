"""Exponential moving average of model weights, evaluated alongside the model when enabled."""
from __future__ import annotations

import copy

import paddle


class ModelEma:
    """``ema = decay * ema + (1 - decay) * weights`` after every optimizer update.

    Holds its own copy of the model (in eval mode), so evaluating the EMA weights needs no
    swapping. Buffers are copied as they are.
    """

    def __init__(self, model: paddle.nn.Layer, decay: float = 0.9999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model)
        self.module.eval()
        for p in self.module.parameters():
            p.stop_gradient = True

    @paddle.no_grad()
    def update(self, model: paddle.nn.Layer) -> None:
        current = model.state_dict()
        for name, ema_value in self.module.state_dict().items():
            value = current[name].detach()
            if paddle.is_floating_point(ema_value):
                ema_value.set_value(ema_value * self.decay + value.astype(ema_value.dtype) * (1.0 - self.decay))
            else:
                ema_value.set_value(value)

    def state_dict(self):
        return self.module.state_dict()

    def set_state_dict(self, state):
        self.module.set_state_dict(state)
