"""Mixed precision: which dtype the device can run, how AMP O2 decorates a model, and the one
way Paddle trains in bfloat16 on a CPU.

On a GPU, AMP is dygraph's ``paddle.amp.auto_cast`` (+ ``decorate`` for O2). On a CPU, dygraph
AMP is switched off by Paddle (``auto_cast`` warns and runs float32, ``decorate`` returns the
model uncast) and dygraph has no bfloat16 CPU kernels for matmul, conv2d, layer_norm, gelu or
add. What does train in bfloat16 on a CPU (Paddle 3.3.1) is a PIR program: ``auto_cast`` entered
*inside* a function traced by ``paddle.jit.to_static`` inserts the casts without the place
check, and Paddle's PIR kernel pass runs every bfloat16 op that has no plain-CPU kernel on its
oneDNN kernel (matmul, conv2d, add, gelu and their grads). :class:`AutocastForward` is that
function; the trainer uses it for ``amp: {enable: true, dtype: bfloat16, level: O1}`` on CPU.
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


def cpu_bfloat16_training(dtype: str, level: str) -> bool:
    """True when this AMP setting trains in bfloat16 on a CPU through :class:`AutocastForward`
    (bfloat16 O1; float16 has no CPU kernels, and O2's ``paddle.amp.decorate`` casts nothing on
    a CPU)."""
    return dtype == "bfloat16" and level == "O1"


class AutocastForward(paddle.nn.Layer):
    """``model``'s forward under ``paddle.amp.auto_cast``, for ``paddle.jit.to_static``.

    Traced, the cast happens while the program is built (PIR mode), where Paddle does not turn
    AMP off on a CPU as dygraph does, and the program runs its bfloat16 matmuls, their grads and
    the ops between them on oneDNN kernels; LayerNorm, softmax and the loss stay in float32
    (Paddle's AMP lists). Parameters stay float32 (O1), so the optimizer, gradient clipping, EMA
    and checkpoints see float32 as always. ``model`` is held as a sublayer: the parameters are
    the same objects, trained in place."""

    def __init__(self, model: paddle.nn.Layer, dtype: str = "bfloat16", level: str = "O1"):
        super().__init__()
        self.model = model
        self.dtype, self.level = dtype, level

    def forward(self, inputs, target=None):  # to_static needs named arguments, not *args
        with paddle.amp.auto_cast(enable=True, dtype=self.dtype, level=self.level):
            return self.model(inputs, target)


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
