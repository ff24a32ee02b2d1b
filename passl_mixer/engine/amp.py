"""Mixed precision on GPUs: which dtype the device can run, and how AMP O2 decorates a model.

Paddle ignores AMP on CPU (``paddle.amp.decorate`` returns the model uncast there), so these
run only on a GPU; the tests reproduce the O2 cast on CPU with Paddle's own ``amp_initialize``.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, Optional

import paddle

from ..errors import ConfigError


def check_amp_support(dtype: str, device: Optional[str] = None) -> None:
    """Refuse an ``amp.dtype`` the device cannot run. Paddle itself turns AMP off in that case
    (``paddle.amp.decorate`` returns the model uncast without a word; ``auto_cast`` warns once
    and runs float32), so a bfloat16 config on a V100 or T4 would train in float32 unnoticed.

    ``paddle.amp.is_bfloat16_supported`` (in Paddle 2.5+ and 3.x) is true on a GPU of compute
    capability 8.0 or newer. For float16 ``auto_cast`` wants 7.0 or newer, while
    ``is_float16_supported`` says yes from 5.3, so the capability is checked too. A ConfigError
    rather than a silent switch to float16: float16 changes the run's numerics (loss scaling,
    a range that can overflow), and a run should be what its config says; the message gives the
    one-word override."""
    device = device or paddle.device.get_device()
    on_gpu = device.startswith("gpu")
    if dtype == "bfloat16":
        ok, need = paddle.amp.is_bfloat16_supported(device), "8.0"
    else:
        ok, need = paddle.amp.is_float16_supported(device), "7.0"
        if ok and on_gpu:
            ok = paddle.device.cuda.get_device_capability()[0] >= 7
    if ok:
        return
    if on_gpu:
        major, minor = paddle.device.cuda.get_device_capability()
        where = (f"this GPU ({paddle.device.cuda.get_device_name()}, compute capability "
                 f"{major}.{minor}; {dtype} AMP needs {need} or newer)")
    else:
        where = f"this device ({device})"
    other = "float16" if dtype == "bfloat16" else "bfloat16"
    raise ConfigError(f"amp.dtype is {dtype}, which {where} cannot run, so Paddle would "
                      f"silently train in float32: set -o amp.dtype={other} if the device has it, "
                      f"or -o amp.enable=false.")


def o2_decorate_kwargs(model: paddle.nn.Layer, dtype: str) -> Dict[str, Any]:
    """The arguments of ``paddle.amp.decorate`` for AMP O2 (both exist in Paddle 2.5+ and 3.x;
    checked against the installed signature all the same):

    - ``master_grad=True``: float32 gradients after backward. Without it, gradient clipping
      (``ClipGradByGlobalNorm``) squares and sums the float16 gradients in float16, so a global
      norm above 256 (sum of squares above float16's 65504) becomes inf, the clip factor
      ``clip_norm / max(norm, clip_norm)`` becomes 0 and the step is silently zeroed.
    - ``excluded_layers``: the layers the model asks to keep in float32
      (``model.o2_float32_layers()``: the momentum encoders of MoCo v3 and BYOL, whose
      ``t * m + p * (1 - m)`` update rounds away in half precision).
    """
    accepted = inspect.signature(paddle.amp.decorate).parameters
    kwargs: Dict[str, Any] = {"level": "O2", "dtype": dtype}
    if "master_grad" in accepted:
        kwargs["master_grad"] = True
    keep = getattr(model, "o2_float32_layers", None)
    keep = list(keep()) if keep is not None else []
    if keep:
        if "excluded_layers" not in accepted:
            raise ConfigError(f"amp.level O2 with {type(model).__name__} needs "
                              f"paddle.amp.decorate(excluded_layers=...) (Paddle 2.5 or newer) "
                              f"to keep its momentum encoder in float32: upgrade Paddle or set "
                              f"-o amp.level=O1.")
        kwargs["excluded_layers"] = keep
    return kwargs
