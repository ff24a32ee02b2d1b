"""One exponential-moving-average update, shared by the model EMA (``train.ema``) and the SSL
momentum encoders (MoCo v3's momentum encoder, BYOL's target network)."""
from __future__ import annotations

from typing import Dict, Literal, Optional

import paddle
import paddle.nn as nn


@paddle.no_grad()
def ema_update_(target: nn.Layer, source: nn.Layer, decay: float, *,
                untrained: Literal["average", "keep"],
                source_values: Optional[Dict[str, paddle.Tensor]] = None) -> None:
    """``t = decay * t + (1 - decay) * s`` in place, for the state-dict entries of ``target``,
    matched by key to those of ``source`` (built from the same config).

    Computed in float32 and written back in the target's dtype: under AMP O2 the source's weights
    are float16/bfloat16 while the target is kept in float32, and in half precision
    ``t * 0.999 + s * 0.001`` rounds back to ``t``, so the average would stop moving.

    ``untrained``: what happens to the entries that are not trained weights (parameters with
    ``stop_gradient``: BatchNorm running statistics, frozen weights; and buffers):
      * ``"average"`` (the model EMA): floating-point ones are averaged like the weights, the
        others (integer counters) copied from the source;
      * ``"keep"`` (momentum encoders): left alone; the target keeps the running statistics its
        own forward passes produce.

    ``source_values``: {key: tensor} to average from instead of the source's own entry, e.g. the
    optimizer's float32 master copy of a half-precision weight.
    """
    values = source.state_dict()
    values.update(source_values or {})
    trained = {key for key, p in source.named_parameters() if not p.stop_gradient}
    for key, t in target.state_dict().items():
        if untrained == "keep" and key not in trained:
            continue
        s = values[key].detach()
        if paddle.is_floating_point(t):
            moved = t.astype("float32") * decay + s.astype("float32") * (1.0 - decay)
            t.set_value(moved.astype(t.dtype))
        else:
            t.set_value(s)
